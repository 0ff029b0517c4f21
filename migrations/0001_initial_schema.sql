-- Migration number: 0001
-- Initial schema of the MVP template: users, sessions, api_keys, posts, audit_logs, settings.
-- D1 runs this file atomically; no BEGIN/COMMIT (remote D1 rejects them).
-- Timestamps are ISO-8601 UTC text (CURRENT_TIMESTAMP); JSON columns are checked with json_valid().
-- Rollback: down/0001_initial_schema.sql.

-- users: accounts and profiles. Soft-deleted by setting deleted_at; rows are never hard-deleted by the app.
CREATE TABLE users (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  email       TEXT    NOT NULL UNIQUE COLLATE NOCASE,
  name        TEXT,
  avatar_url  TEXT,
  created_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
  deleted_at  TEXT
);
CREATE INDEX idx_users_deleted_at ON users(deleted_at);

-- sessions: a session dies with its user (CASCADE): a session of a removed user must never authenticate.
CREATE TABLE sessions (
  id          TEXT    PRIMARY KEY,
  user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  expires_at  TEXT    NOT NULL,
  data        TEXT    CHECK (data IS NULL OR json_valid(data)),
  created_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_sessions_user_id ON sessions(user_id);
CREATE INDEX idx_sessions_expires_at ON sessions(expires_at);

-- api_keys: only the hash of a key is stored; keys die with their user (CASCADE), like sessions.
CREATE TABLE api_keys (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  key_hash      TEXT    NOT NULL UNIQUE,
  name          TEXT    NOT NULL,
  scopes        TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
  last_used_at  TEXT,
  created_at    TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
  expires_at    TEXT,
  revoked_at    TEXT
);
CREATE INDEX idx_api_keys_user_id ON api_keys(user_id);

-- posts: content outlives nothing by accident: deleting a user who still has posts is refused (RESTRICT);
-- soft-delete the user (deleted_at) or move/delete the posts first.
CREATE TABLE posts (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  title         TEXT    NOT NULL,
  content       TEXT,
  slug          TEXT    NOT NULL UNIQUE,
  published     INTEGER NOT NULL DEFAULT 0 CHECK (published IN (0, 1)),
  published_at  TEXT,
  created_at    TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at    TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_posts_user_id ON posts(user_id);
CREATE INDEX idx_posts_published ON posts(published, published_at);

-- audit_logs: the trail must survive the user it describes (SET NULL keeps the row, drops the link).
CREATE TABLE audit_logs (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id        INTEGER REFERENCES users(id) ON DELETE SET NULL,
  action         TEXT    NOT NULL,
  resource_type  TEXT,
  resource_id    TEXT,
  details        TEXT    CHECK (details IS NULL OR (json_valid(details) AND json_type(details) = 'object')),
  ip_address     TEXT,
  user_agent     TEXT,
  created_at     TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_audit_logs_user_id ON audit_logs(user_id);
CREATE INDEX idx_audit_logs_resource ON audit_logs(resource_type, resource_id);
CREATE INDEX idx_audit_logs_created_at ON audit_logs(created_at);

-- settings: application configuration, one row per key.
CREATE TABLE settings (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  key          TEXT    NOT NULL UNIQUE,
  value        TEXT,
  description  TEXT,
  created_at   TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at   TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
