-- The operator console's audit log (src/admin): every state-changing
-- action, refused ones included: who, what, on what, when, with what result.
CREATE TABLE admin_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    result  TEXT   NOT NULL
);
CREATE INDEX admin_audit_at ON admin_audit (at_ms);
