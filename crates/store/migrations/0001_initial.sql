-- Version 1: the escalation relay's tables. `{schema}` is replaced by the
-- configured (validated, quoted) schema before this runs.

-- One row per conversation: the state machine's state as JSONB, plus the
-- columns the query endpoints and the CLI filter on.
CREATE TABLE {schema}.conversations (
    bot_id           text        NOT NULL,
    conversation_id  text        NOT NULL,
    state            jsonb       NOT NULL,
    phase            text        NOT NULL CHECK (phase IN ('idle', 'requested', 'queued', 'connected')),
    -- The current or last escalation.
    escalation_id    text,
    widget_sequence  bigint      NOT NULL DEFAULT 0,
    webhook_sequence bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
);

-- Every command the worker decided on: the durable dedupe store (docs/protocol.md §5,
-- "applied once") and the transition/rejection log. `id` orders the log.
CREATE TABLE {schema}.events (
    id              bigserial   NOT NULL,
    bot_id          text        NOT NULL,
    conversation_id text        NOT NULL,
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    verdict         text        NOT NULL CHECK (verdict IN ('applied', 'duplicate', 'ignored', 'rejected')),
    code            text,
    phase_before    text        NOT NULL,
    phase_after     text        NOT NULL,
    received_at     timestamptz NOT NULL,
    applied_at      timestamptz NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, event_id),
    CHECK ((verdict = 'rejected') = (code IS NOT NULL))
);
-- `GET /agent/converse/events/{eventId}` knows the bot, not the conversation.
CREATE INDEX events_bot_event_idx ON {schema}.events (bot_id, event_id);
-- A conversation's timeline, in applied order.
CREATE INDEX events_conversation_order_idx ON {schema}.events (bot_id, conversation_id, id);

-- The widget stream; the SSE endpoint replays it after `Last-Event-ID`.
CREATE TABLE {schema}.widget_events (
    bot_id          text        NOT NULL,
    conversation_id text        NOT NULL,
    sequence        bigint      NOT NULL,
    escalation_id   text        NOT NULL,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, conversation_id, sequence)
);

-- The webhook outbox: one row per webhook, delivered in sequence order per
-- conversation (docs/protocol.md §4).
CREATE TABLE {schema}.webhook_deliveries (
    id              bigserial   PRIMARY KEY,
    bot_id          text        NOT NULL,
    conversation_id text        NOT NULL,
    sequence        bigint      NOT NULL,
    event_type      text        NOT NULL,
    escalation_id   text,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    UNIQUE (bot_id, conversation_id, sequence)
);
CREATE INDEX webhook_deliveries_due_idx ON {schema}.webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

-- Each attempt of a delivery: the history a dead letter carries (docs/protocol.md §4).
CREATE TABLE {schema}.webhook_attempts (
    delivery_id bigint      NOT NULL REFERENCES {schema}.webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL,
    status_code integer,
    error       text,
    latency_ms  integer,
    PRIMARY KEY (delivery_id, attempt)
);

-- Armed timers, so they survive worker restarts (docs/protocol.md §5).
CREATE TABLE {schema}.timers (
    bot_id          text        NOT NULL,
    conversation_id text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('no_response', 'queue', 'idle', 'ttl')),
    escalation_id   text        NOT NULL,
    due_at          timestamptz NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, kind)
);
CREATE INDEX timers_due_idx ON {schema}.timers (due_at);

-- Workers and the shards they hold (docs/protocol.md §6, "workers scale horizontally").
CREATE TABLE {schema}.workers (
    id           text        PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL
);

CREATE TABLE {schema}.shard_leases (
    shard      integer     PRIMARY KEY CHECK (shard >= 0),
    holder     text,
    expires_at timestamptz,
    epoch      bigint      NOT NULL DEFAULT 0
);
