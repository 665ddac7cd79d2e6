-- Connections as managed objects (issue #14 item 2) and the environment column of secrets
-- (issue #17): a secret or connection belongs to one environment ('' = every environment, the
-- fallback a run in any environment reads when its own has no value of that name).
-- Both tables hold AES-256-GCM ciphertext under the secrets key: `nexusflow secrets
-- rotate-key` finds them through nexusflow_kernel.secrets.ENCRYPTED_COLUMNS.

ALTER TABLE nexusflow_secrets ADD COLUMN IF NOT EXISTS env text NOT NULL DEFAULT '';
ALTER TABLE nexusflow_secrets DROP CONSTRAINT IF EXISTS nexusflow_secrets_pkey;
ALTER TABLE nexusflow_secrets ADD PRIMARY KEY (env, name);

CREATE TABLE IF NOT EXISTS nexusflow_connections (
    env           text NOT NULL DEFAULT '',
    name          text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,127}$'),
    kind          text NOT NULL CHECK (kind IN ('postgres', 'http')),
    ciphertext    bytea NOT NULL,        -- AES-256-GCM of the JSON config (URL, password, headers)
    display       text NOT NULL,         -- what lists show: the URL without its password
    trusted       boolean NOT NULL DEFAULT false,  -- db_query: a privileged role is allowed
    scope_groups  text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text,
    PRIMARY KEY (env, name)
);
