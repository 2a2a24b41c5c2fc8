INSERT INTO conversations (id, lease_owner, lease_until_ms) VALUES (?1, ?2, ?3)
ON CONFLICT (id) DO UPDATE
   SET lease_owner = excluded.lease_owner, lease_until_ms = excluded.lease_until_ms
   WHERE conversations.lease_owner IS NULL
      OR conversations.lease_owner = excluded.lease_owner
      OR conversations.lease_until_ms <= ?4
