-- Migration number: 0002
-- Sample data for development and testing. Never applied to production (its skip list in environments.yaml).
-- Rollback: down/0002_sample_data.sql.

INSERT INTO users (id, email, name, avatar_url, created_at, updated_at, deleted_at) VALUES
  (1, 'ada@example.com',    'Ada Lovelace',   'https://example.com/avatars/ada.png',   '2025-01-05 09:12:00', '2025-03-01 10:00:00', NULL),
  (2, 'grace@example.com',  'Grace Hopper',   'https://example.com/avatars/grace.png', '2025-01-06 14:30:00', '2025-01-06 14:30:00', NULL),
  (3, 'alan@example.com',   'Alan Turing',    NULL,                                    '2025-02-11 08:45:00', '2025-02-11 08:45:00', NULL),
  (4, 'edsger@example.com', 'Edsger Dijkstra', NULL,                                   '2025-02-20 16:05:00', '2025-04-02 12:00:00', '2025-04-02 12:00:00');

INSERT INTO sessions (id, user_id, expires_at, data, created_at) VALUES
  ('sess_5f2b9c1e', 1, '2026-12-31 23:59:59', '{"ip":"203.0.113.7","ua":"Firefox/128"}', '2025-03-01 10:00:00'),
  ('sess_8a7d3e40', 2, '2026-12-31 23:59:59', '{"ip":"198.51.100.23","ua":"Safari/17"}', '2025-03-02 11:20:00'),
  ('sess_c41f0b92', 1, '2025-03-08 10:00:00', NULL,                                     '2025-03-01 09:00:00');

INSERT INTO api_keys (id, user_id, key_hash, name, scopes, last_used_at, created_at, expires_at, revoked_at) VALUES
  (1, 1, 'sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'CI deploy',   '["posts:read","posts:write"]', '2025-03-10 07:00:00', '2025-01-10 09:00:00', NULL, NULL),
  (2, 2, 'sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752', 'Analytics',   '["posts:read"]',               NULL,                  '2025-01-12 15:00:00', '2026-01-12 15:00:00', NULL),
  (3, 1, 'sha256:fd61a03af4f77d870fc21e05e7e80678095c92d808cfb3b5c279ee04c74aca13', 'Old laptop',  '["*"]',                        '2025-02-01 12:00:00', '2025-01-05 09:30:00', NULL, '2025-02-15 08:00:00');

INSERT INTO posts (id, user_id, title, content, slug, published, published_at, created_at, updated_at) VALUES
  (1, 1, 'Notes on the Analytical Engine', 'The engine weaves algebraic patterns just as the Jacquard loom weaves flowers and leaves.', 'notes-on-the-analytical-engine', 1, '2025-01-20 09:00:00', '2025-01-18 17:00:00', '2025-01-20 09:00:00'),
  (2, 2, 'It is easier to ask forgiveness', 'A short post about shipping things.', 'easier-to-ask-forgiveness', 1, '2025-02-01 12:00:00', '2025-02-01 11:00:00', '2025-02-01 12:00:00'),
  (3, 3, 'Draft: computable numbers', NULL, 'draft-computable-numbers', 0, NULL, '2025-02-12 10:00:00', '2025-02-12 10:00:00');

INSERT INTO audit_logs (user_id, action, resource_type, resource_id, details, ip_address, user_agent, created_at) VALUES
  (1,    'user.login',      'session', 'sess_5f2b9c1e', '{"method":"password"}',        '203.0.113.7',   'Firefox/128', '2025-03-01 10:00:00'),
  (1,    'api_key.create',  'api_key', '1',             '{"name":"CI deploy"}',         '203.0.113.7',   'Firefox/128', '2025-01-10 09:00:00'),
  (1,    'api_key.revoke',  'api_key', '3',             '{"reason":"lost laptop"}',     '203.0.113.7',   'Firefox/128', '2025-02-15 08:00:00'),
  (2,    'post.publish',    'post',    '2',             '{"slug":"easier-to-ask-forgiveness"}', '198.51.100.23', 'Safari/17', '2025-02-01 12:00:00'),
  (4,    'user.delete',     'user',    '4',             '{"soft":true}',                NULL,            NULL,          '2025-04-02 12:00:00'),
  (NULL, 'settings.update', 'setting', 'maintenance_mode', '{"from":"true","to":"false"}', NULL,         'cron',        '2025-04-03 00:00:00');

INSERT INTO settings (key, value, description, created_at, updated_at) VALUES
  ('site_name',          'MVP Template', 'Name shown in the page title and emails',      '2025-01-01 00:00:00', '2025-01-01 00:00:00'),
  ('maintenance_mode',   'false',        'When true, the app serves a maintenance page', '2025-01-01 00:00:00', '2025-04-03 00:00:00'),
  ('max_api_keys_per_user', '5',         'Upper bound enforced when creating API keys',  '2025-01-01 00:00:00', '2025-01-01 00:00:00'),
  ('session_ttl_hours',  '168',          'Lifetime of a login session',                  '2025-01-01 00:00:00', '2025-01-01 00:00:00');
