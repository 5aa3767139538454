'use strict';

module.exports = ({ env }) => ({
  host: env('HOST', '127.0.0.1'),
  port: env.int('PORT', 1337),
  app: {
    keys: env.array('APP_KEYS'),
  },
  webhooks: {
    // Headers sent with every webhook delivery, before each webhook's own headers.
    defaultHeaders: {},
  },
});
