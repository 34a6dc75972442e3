-- Version 2: what the webhook dispatcher and the dead-letter CLI need on the
-- outbox (docs/protocol.md §4, §8). `{schema}` is replaced by the quoted schema.

ALTER TABLE {schema}.webhook_deliveries
    -- A dispatcher's claim: the row is being sent by `claimed_by` until
    -- `claimed_until`; after that any dispatcher may take it again.
    ADD COLUMN claimed_by       text,
    ADD COLUMN claimed_until    timestamptz,
    -- When the current run of attempts started: the retry budget counts from
    -- here. A replay starts a new run.
    ADD COLUMN first_attempt_at timestamptz,
    -- Why it stopped being retried. Set on a `pending` row too while the
    -- dead-lettering of a `widgetEscalate` waits for the broker to confirm the
    -- `escalateUndeliverable` command.
    ADD COLUMN reason           text
        CHECK (reason IN ('final_status', 'out_of_budget', 'no_endpoint')),
    ADD COLUMN dead_at          timestamptz,
    -- How many times an operator replayed it.
    ADD COLUMN replays          integer     NOT NULL DEFAULT 0;

-- Claiming: per bot, the due pending rows.
CREATE INDEX webhook_deliveries_bot_due_idx ON {schema}.webhook_deliveries (bot_id, next_attempt_at)
    WHERE status = 'pending';
-- Head of line: a conversation's lowest pending sequence.
CREATE INDEX webhook_deliveries_pending_head_idx
    ON {schema}.webhook_deliveries (bot_id, conversation_id, sequence)
    WHERE status = 'pending';
-- `dlq list` and `dlq purge`, newest first.
CREATE INDEX webhook_deliveries_dead_idx ON {schema}.webhook_deliveries (dead_at)
    WHERE status = 'dead';
