-- The Nexus-Flow service (issue #14): API tokens of a service run without a JupyterHub
-- (`nexusflow server --auth token`). On a Hub, the Hub's own tokens are used instead.
-- Safe to apply twice.

CREATE TABLE IF NOT EXISTS nexusflow_api_tokens (
    token_id      text PRIMARY KEY,            -- shown in lists; revoke by it
    token_hash    text NOT NULL UNIQUE,        -- SHA-256 of the token (shown once, never kept)
    user_name     text NOT NULL,
    groups        text[] NOT NULL DEFAULT '{}',
    admin         boolean NOT NULL DEFAULT false,
    note          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text,
    expires_at    timestamptz                  -- NULL: until revoked
);
CREATE INDEX IF NOT EXISTS nexusflow_api_tokens_user ON nexusflow_api_tokens (user_name);
