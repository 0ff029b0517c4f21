-- Rollback of 0002_sample_data: removes exactly the sample rows it inserted.
DELETE FROM audit_logs WHERE created_at IN ('2025-03-01 10:00:00','2025-01-10 09:00:00','2025-02-15 08:00:00','2025-02-01 12:00:00','2025-04-02 12:00:00','2025-04-03 00:00:00') AND user_agent IS NOT 'app';
DELETE FROM sessions WHERE id IN ('sess_5f2b9c1e','sess_8a7d3e40','sess_c41f0b92');
DELETE FROM api_keys WHERE id IN (1, 2, 3);
DELETE FROM posts WHERE id IN (1, 2, 3);
DELETE FROM settings WHERE key IN ('site_name','maintenance_mode','max_api_keys_per_user','session_ttl_hours');
DELETE FROM users WHERE id IN (1, 2, 3, 4);
