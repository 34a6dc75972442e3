-- Version 4: event ids in namespaces (docs/protocol.md §2: "client event ids live in
-- their own namespace: they can never collide with ids the service makes for
-- timers or notices"). An agent event id `timer:…` or `vm:…` and one of ours
-- are different events: the dedupe key is (bot, conversation, space, id).
-- The space follows from the event type, so existing rows get theirs from it.

ALTER TABLE {schema}.events
    ADD COLUMN id_space text NOT NULL DEFAULT 'agent'
        CHECK (id_space IN ('agent', 'visitor', 'system'));

UPDATE {schema}.events SET id_space = CASE
    WHEN event_type IN ('escalate', 'timerFired', 'escalateUndeliverable') THEN 'system'
    WHEN event_type IN ('visitorMessage', 'visitorEnd') THEN 'visitor'
    ELSE 'agent'
END;

ALTER TABLE {schema}.events
    DROP CONSTRAINT events_pkey,
    ADD PRIMARY KEY (bot_id, conversation_id, id_space, event_id);
