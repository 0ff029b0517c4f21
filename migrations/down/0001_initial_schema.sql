-- Rollback of 0001_initial_schema: drops every table it created (children first).
DROP TABLE IF EXISTS audit_logs;
DROP TABLE IF EXISTS posts;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS sessions;
DROP TABLE IF EXISTS settings;
DROP TABLE IF EXISTS users;
