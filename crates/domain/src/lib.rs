//! The escalation domain: everything the system decides, with no I/O.
//!
//! No tokio, lapin, reqwest or database types live here, so every rule can be
//! unit- and property-tested in isolation and every stage of the flow (ingress,
//! worker, CLI) shares one definition of the wire and of the state machine.
//!
//! - [`ids`]: validated identifiers (bot, conversation, event, escalation, message).
//! - [`agent_event`]: the agent events of `send-message-to-widget` (docs/protocol.md §2), their
//!   canonical serde form, and [`agent_event::parse_agent_event`], which returns
//!   every problem of a request body at once.
//! - [`display`]: [`DisplayValue`], a queue position or waiting time shown to
//!   the visitor as given.
//! - [`envelope`]: the command the ingress publishes and the worker consumes.
//! - [`validation`]: field errors (path + code) ready to become a 400 body.
//! - [`widget`]: events streamed to the visitor's widget (docs/protocol.md §3).
//! - [`widget_request`]: the widget API's request bodies (`escalate`, visitor
//!   messages), validated like agent events.
//! - [`webhook`]: outbound webhook payloads with the original envelope (docs/protocol.md §4).
//! - [`machine`]: the escalation state machine of docs/protocol.md §5 as a pure function.
//! - [`live`]: [`live::LiveUpdate`], a committed batch's news for live subscribers.
//! - [`retry`]: webhook retry policy: backoff, jitter, `Retry-After`, budgets,
//!   and the final/retryable classification of attempt outcomes.
//! - [`time`]: instants after a duration, saturating.
//! - [`report`]: an error and its sources on one line.
//! - [`url_list`]: where a list of node URLs in one string splits.

pub mod agent_event;
pub mod display;
pub mod envelope;
pub mod ids;
pub mod live;
pub mod machine;
pub mod report;
pub mod retry;
pub mod time;
pub mod url_list;
pub mod validation;
pub mod webhook;
pub mod widget;
pub mod widget_request;

pub use agent_event::{AgentAction, AgentEvent, parse_agent_event};
pub use display::DisplayValue;
pub use envelope::Envelope;
pub use ids::{BotId, ConversationId, EscalationId, EventId, IdSpace, MessageId, ScopedEventId};
pub use machine::{
    Command, Context, Conversation, Effect, EndReason, Input, OutcomeKind, Phase, RejectCode, Rejection,
    Rules, TimerKind, Transition, Verdict, apply, step,
};
pub use retry::{AttemptResult, Class, Decision, RetryPolicy};
pub use validation::{FieldCode, FieldError, FieldWarning, ValidationErrors};
pub use widget_request::{
    EscalateRequest, VisitorMessageRequest, parse_escalate_request, parse_visitor_message,
};
