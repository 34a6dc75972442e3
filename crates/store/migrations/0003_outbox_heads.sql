-- Version 3: each conversation's head of line made explicit, so that claiming
-- webhook deliveries costs O(claimed) whatever the backlog and whatever the
-- planner's statistics (docs/protocol.md §4). `{schema}` is replaced by the
-- quoted schema.
--
-- Before this, a claim found heads with an anti join over every pending row
-- of the bot; on a table that had never been analyzed the planner chose a
-- nested loop that walked the bot's whole pending set per candidate (52 s for
-- one claim over 11,800 pending rows).

-- One row per conversation that has pending deliveries: its lowest pending
-- sequence. The worker inserts it in the transaction that queues the first
-- pending delivery; the dispatcher moves it to the next pending sequence (or
-- deletes it) in the transaction that settles the head. A claim is a lease on
-- the head: `due_at` moves to the lease's end and `claimed_by` names the
-- dispatcher, so an expired lease is simply due again.
CREATE TABLE {schema}.webhook_heads (
    bot_id          text        NOT NULL,
    conversation_id text        NOT NULL,
    delivery_id     bigint      NOT NULL,
    sequence        bigint      NOT NULL,
    due_at          timestamptz NOT NULL,
    claimed_by      text,
    PRIMARY KEY (bot_id, conversation_id)
);
-- Claims: a bot's due heads in due order.
CREATE INDEX webhook_heads_due_idx ON {schema}.webhook_heads (bot_id, due_at);
-- Settling finds the head of a delivery.
CREATE UNIQUE INDEX webhook_heads_delivery_idx ON {schema}.webhook_heads (delivery_id);

INSERT INTO {schema}.webhook_heads (bot_id, conversation_id, delivery_id, sequence, due_at)
SELECT DISTINCT ON (bot_id, conversation_id) bot_id, conversation_id, id, sequence, next_attempt_at
FROM {schema}.webhook_deliveries
WHERE status = 'pending'
ORDER BY bot_id, conversation_id, sequence;

-- The claim indexes of version 2 are replaced by the heads.
DROP INDEX {schema}.webhook_deliveries_bot_due_idx;
DROP INDEX {schema}.webhook_deliveries_due_idx;

-- New reasons: a `widgetEscalate` whose escalation ended before it could be
-- sent is settled `skipped` (`escalation_ended`); a row whose payload no
-- longer decodes is dead-lettered alone (`undecodable`).
ALTER TABLE {schema}.webhook_deliveries DROP CONSTRAINT webhook_deliveries_reason_check;
ALTER TABLE {schema}.webhook_deliveries ADD CONSTRAINT webhook_deliveries_reason_check
    CHECK (reason IN ('final_status', 'out_of_budget', 'no_endpoint', 'escalation_ended', 'undecodable'));

-- `dlq list` (`dead_letters.rs`, same predicate word for word): the dead
-- letters and what was skipped because its escalation ended, in order, for
-- all bots or one.
CREATE INDEX webhook_deliveries_given_up_idx ON {schema}.webhook_deliveries (dead_at, id)
    WHERE (status = 'dead' OR (status = 'skipped' AND reason = 'escalation_ended'));
CREATE INDEX webhook_deliveries_bot_given_up_idx ON {schema}.webhook_deliveries (bot_id, dead_at, id)
    WHERE (status = 'dead' OR (status = 'skipped' AND reason = 'escalation_ended'));
