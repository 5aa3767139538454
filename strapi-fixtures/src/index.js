'use strict';

/**
 * Test fixture provisioning, driven by environment variables and idempotent across restarts:
 *
 * - FIXTURE_API_TOKEN: a full-access API token named "sidecar" whose key is this value.
 * - FIXTURE_WEBHOOK_URL (+ FIXTURE_WEBHOOK_SECRET): a webhook named "sidecar" to that URL, sending
 *   `Authorization: Bearer <secret>`, for every entry.* event. Active at once, never duplicated.
 *   Without a URL, a "sidecar" webhook left by an earlier run is deleted.
 * - FIXTURE_SEED_USERS: a JSON array of {username, email, password}; each user exists, confirmed,
 *   not blocked, in the Authenticated role, with that password.
 *
 * It also makes sure the Authenticated role may call GET /api/users/me.
 * FIXTURE_EXIT_ON_STDIN_CLOSE=1 (set by launcher.py) shuts Strapi down when its stdin closes.
 */

const TOKEN_NAME = 'sidecar';
const WEBHOOK_NAME = 'sidecar';
const WEBHOOK_EVENTS = [
  'entry.create',
  'entry.update',
  'entry.delete',
  'entry.publish',
  'entry.unpublish',
  'entry.draft-discard',
];
const USER_UID = 'plugin::users-permissions.user';
const ROLE_UID = 'plugin::users-permissions.role';
const PERMISSION_UID = 'plugin::users-permissions.permission';
const AUTHENTICATED_ACTIONS = ['plugin::users-permissions.user.me'];

const apiTokenService = (strapi) =>
  strapi.service('admin::api-token-content-api') || strapi.service('admin::api-token');

async function ensureApiToken(strapi, key) {
  const svc = apiTokenService(strapi);
  const query = strapi.db.query('admin::api-token');
  let row = await query.findOne({ where: { name: TOKEN_NAME } });
  if (!row) {
    const created = await svc.create({
      name: TOKEN_NAME,
      description: 'Full-access token for the notification sidecar (test fixture).',
      type: 'full-access',
      lifespan: null,
    });
    row = await query.findOne({ where: { id: created.id } });
    strapi.log.info(`[fixture] created API token "${TOKEN_NAME}"`);
  }
  const wantedHash = svc.hash(key);
  if (row.accessKey !== wantedHash || row.type !== 'full-access' || row.expiresAt) {
    const encryption = strapi.service('admin::encryption');
    await query.update({
      where: { id: row.id },
      data: {
        accessKey: wantedHash,
        encryptedKey: encryption ? encryption.encrypt(key) : row.encryptedKey,
        type: 'full-access',
        lifespan: null,
        expiresAt: null,
      },
    });
    strapi.log.info(`[fixture] set the key of API token "${TOKEN_NAME}"`);
  }
}

function sameWebhook(current, wanted) {
  return (
    current.url === wanted.url &&
    current.isEnabled === true &&
    JSON.stringify(current.headers || {}) === JSON.stringify(wanted.headers) &&
    JSON.stringify([...(current.events || [])].sort()) === JSON.stringify([...wanted.events].sort())
  );
}

async function removeWebhook(strapi) {
  const store = strapi.get('webhookStore');
  const runner = strapi.get('webhookRunner');
  for (const webhook of await store.findWebhooks()) {
    if (webhook.name === WEBHOOK_NAME) {
      await store.deleteWebhook(webhook.id);
      runner.remove(webhook);
      strapi.log.info(`[fixture] deleted webhook "${WEBHOOK_NAME}" (${webhook.id}): no URL given`);
    }
  }
}

async function ensureWebhook(strapi, url, secret) {
  const store = strapi.get('webhookStore');
  const runner = strapi.get('webhookRunner');
  const allowed = new Set(Array.from(store.allowedEvents.values()));
  const wanted = {
    name: WEBHOOK_NAME,
    url,
    headers: secret ? { Authorization: `Bearer ${secret}` } : {},
    events: WEBHOOK_EVENTS.filter((event) => allowed.has(event)),
  };

  const [current, ...duplicates] = (await store.findWebhooks()).filter(
    (webhook) => webhook.name === WEBHOOK_NAME
  );
  for (const duplicate of duplicates) {
    await store.deleteWebhook(duplicate.id);
    runner.remove(duplicate);
    strapi.log.info(`[fixture] deleted duplicate webhook ${duplicate.id}`);
  }

  if (!current) {
    const created = await store.createWebhook(wanted);
    runner.add(created);
    strapi.log.info(`[fixture] created webhook "${WEBHOOK_NAME}" (${created.id})`);
  } else if (!sameWebhook(current, wanted)) {
    const updated = await store.updateWebhook(current.id, { ...wanted, isEnabled: true });
    runner.update(updated);
    strapi.log.info(`[fixture] updated webhook "${WEBHOOK_NAME}" (${updated.id})`);
  }
}

async function authenticatedRole(strapi) {
  const role = await strapi.db.query(ROLE_UID).findOne({ where: { type: 'authenticated' } });
  if (!role) {
    throw new Error('[fixture] the users-permissions Authenticated role is missing');
  }
  return role;
}

async function ensureAuthenticatedPermissions(strapi, role) {
  const query = strapi.db.query(PERMISSION_UID);
  for (const action of AUTHENTICATED_ACTIONS) {
    const existing = await query.findOne({ where: { action, role: role.id } });
    if (!existing) {
      await query.create({ data: { action, role: role.id } });
      strapi.log.info(`[fixture] granted ${action} to the Authenticated role`);
    }
  }
}

function parseSeedUsers(raw) {
  const users = JSON.parse(raw);
  if (!Array.isArray(users)) {
    throw new Error('FIXTURE_SEED_USERS must be a JSON array of {username, email, password}');
  }
  for (const user of users) {
    if (!user || !user.username || !user.email || !user.password) {
      throw new Error('each FIXTURE_SEED_USERS item needs username, email and password');
    }
  }
  return users;
}

async function ensureSeedUser(strapi, role, { username, email, password }) {
  const userService = strapi.plugin('users-permissions').service('user');
  const existing = await strapi.db.query(USER_UID).findOne({
    where: { $or: [{ email: email.toLowerCase() }, { username }] },
    populate: ['role'],
  });
  if (!existing) {
    await userService.add({
      username,
      email: email.toLowerCase(),
      password,
      provider: 'local',
      confirmed: true,
      blocked: false,
      role: role.id,
    });
    strapi.log.info(`[fixture] created user "${username}"`);
    return;
  }
  const passwordOk =
    existing.password && (await userService.validatePassword(password, existing.password));
  const roleOk = existing.role && existing.role.id === role.id;
  if (!passwordOk || !roleOk || existing.confirmed !== true || existing.blocked === true) {
    await userService.edit(existing.id, {
      ...(passwordOk ? {} : { password }),
      confirmed: true,
      blocked: false,
      role: role.id,
    });
    strapi.log.info(`[fixture] updated user "${username}"`);
  }
}

// Set by launcher.py, which holds the write end of our stdin: when the launcher's process dies,
// however it dies, the pipe closes and Strapi shuts down instead of living on as an orphan.
function exitWhenStdinCloses() {
  if (process.env.FIXTURE_EXIT_ON_STDIN_CLOSE !== '1') {
    return;
  }
  const shutDown = () => process.kill(process.pid, 'SIGTERM');
  process.stdin.on('end', shutDown);
  process.stdin.on('error', shutDown);
  process.stdin.resume();
}

module.exports = {
  register() {
    exitWhenStdinCloses();
  },

  async bootstrap({ strapi }) {
    const env = process.env;
    const role = await authenticatedRole(strapi);
    await ensureAuthenticatedPermissions(strapi, role);
    // Users first: on a fresh database no webhook exists yet, so seeding sends no deliveries.
    if (env.FIXTURE_SEED_USERS) {
      for (const user of parseSeedUsers(env.FIXTURE_SEED_USERS)) {
        await ensureSeedUser(strapi, role, user);
      }
    }
    if (env.FIXTURE_API_TOKEN) {
      await ensureApiToken(strapi, env.FIXTURE_API_TOKEN);
    }
    if (env.FIXTURE_WEBHOOK_URL) {
      await ensureWebhook(strapi, env.FIXTURE_WEBHOOK_URL, env.FIXTURE_WEBHOOK_SECRET || '');
    } else {
      await removeWebhook(strapi);
    }
  },
};
