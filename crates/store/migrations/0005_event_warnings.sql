-- Version 5: warnings on the event log (docs/protocol.md §2). A display-only field the
-- ingress dropped instead of failing the event (an `agentAvatar` that is not
-- an https URL) is recorded with the verdict, as a JSON array of
-- `{"field","code","message"}`; NULL when there was none. Independent of
-- version 3: the two may be applied in either order. `{schema}` is replaced
-- by the quoted schema.

ALTER TABLE {schema}.events ADD COLUMN warnings jsonb;
