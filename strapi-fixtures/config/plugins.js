'use strict';

// FIXTURE_JWT_MODE selects how users-permissions issues user JWTs:
// - "legacy" (default): the plugin's own HS256 tokens, claims {id, iat, exp}.
// - "refresh": session-managed access tokens, claims {userId, sessionId, type: "access", iat, exp}.
const JWT_MODES = ['legacy', 'refresh'];

module.exports = ({ env }) => {
  const mode = env('FIXTURE_JWT_MODE', 'legacy');
  if (!JWT_MODES.includes(mode)) {
    throw new Error(`FIXTURE_JWT_MODE must be one of ${JWT_MODES.join(', ')}, got "${mode}"`);
  }
  return {
    'users-permissions': {
      config: {
        jwtSecret: env('JWT_SECRET'),
        // The auth routes are limited to 10 requests a minute per IP by default: too few for tests.
        ratelimit: { enabled: false },
        ...(mode === 'refresh' ? { jwtManagement: 'refresh' } : {}),
      },
    },
  };
};
