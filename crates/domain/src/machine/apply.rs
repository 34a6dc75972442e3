//! The transitions of docs/protocol.md §5. Every arm of the table is one `match` arm in
//! [`agent`]; the bot, visitor and timer inputs follow.

use chrono::{DateTime, Utc};
use std::time::Duration;

use super::{
    Agent, Command, Context, Conversation, DEDUPE_WINDOW, Effect, EndReason, Escalation, HeldMessage, Input,
    Outcome, OutcomeKind, Phase, QueueInfo, RejectCode, Rejection, Stage, TimerKind, Transition, Verdict,
};
use crate::agent_event::AgentAction;
use crate::ids::{EscalationId, EventId, MessageId};
use crate::webhook::{WebhookEnvelope, WebhookEvent};
use crate::widget::{WidgetEnvelope, WidgetEvent};

/// Applies one command. A repeat of a recent event id is a `duplicate` with no
/// effect; a refusal leaves the state untouched and says why.
pub fn apply(state: &Conversation, cmd: &Command, ctx: &Context<'_>) -> Result<Transition, Rejection> {
    if state.recent_event_ids.contains(&cmd.scoped_id()) {
        return Ok(Transition { next: state.clone(), verdict: Verdict::Duplicate, effects: Vec::new() });
    }
    let mut b = Builder { next: state.clone(), effects: Vec::new(), now: ctx.now };
    let verdict = match &cmd.input {
        Input::Agent { escalation_id, action, .. } => {
            agent(&mut b, ctx, escalation_id.as_ref(), action, &cmd.event_id)?
        }
        Input::Escalate { escalation_id, escalate_to, metadata, transcript } => {
            if b.next.live().is_some() {
                // docs/protocol.md §5: escalate again while live is idempotent.
                Verdict::Duplicate
            } else {
                b.next.escalation = Some(Escalation {
                    id: escalation_id.clone(),
                    started_at: ctx.now,
                    stage: Stage::Requested,
                    agent: None,
                    queue: None,
                    held: Vec::new(),
                    timers: Default::default(),
                    outcome: None,
                });
                b.widget(WidgetEvent::EscalationRequested);
                b.webhook(WebhookEvent::WidgetEscalate {
                    escalate_to: escalate_to.clone(),
                    metadata: metadata.clone(),
                    transcript: transcript.clone(),
                });
                b.set_timer(TimerKind::NoResponse, ctx.rules.no_response_timeout);
                b.set_timer(TimerKind::Ttl, ctx.rules.ttl);
                Verdict::Applied
            }
        }
        Input::VisitorMessage { message_id, text } => match b.next.phase() {
            Phase::Idle => return Err(b.reject(RejectCode::NoActiveEscalation)),
            Phase::Requested | Phase::Queued => {
                let max = ctx.rules.max_held_messages;
                let esc = b.live_mut();
                if esc.held.len() >= max {
                    return Err(b.reject(RejectCode::HeldMessagesFull));
                }
                esc.held.push(HeldMessage { message_id: message_id.clone(), text: text.clone() });
                Verdict::Applied
            }
            Phase::Connected => {
                b.webhook(WebhookEvent::WidgetMessage { text: text.clone(), message_id: message_id.clone() });
                b.set_timer(TimerKind::Idle, ctx.rules.idle_timeout);
                Verdict::Applied
            }
        },
        Input::VisitorEnd => match b.next.phase() {
            Phase::Idle => return Err(b.reject(RejectCode::NoActiveEscalation)),
            Phase::Requested | Phase::Queued => {
                b.end_with_session(OutcomeKind::Cancelled, EndReason::VisitorEnded);
                Verdict::Applied
            }
            Phase::Connected => {
                b.end_with_session(OutcomeKind::Ended, EndReason::VisitorEnded);
                Verdict::Applied
            }
        },
        Input::TimerFired { escalation_id, kind } => timer(&mut b, escalation_id, *kind),
        Input::EscalateUndeliverable { escalation_id } => {
            let waiting =
                b.next.live().is_some_and(|e| &e.id == escalation_id && e.stage == Stage::Requested);
            if waiting {
                let reason = EndReason::DeliveryFailed;
                b.end(OutcomeKind::Failed, reason, WidgetEvent::EscalationFailed { reason }, false);
                Verdict::Applied
            } else {
                // The contact centre answered after all, or the escalation is over.
                Verdict::Ignored
            }
        }
    };
    b.remember(cmd);
    Ok(b.finish(verdict))
}

/// What the worker runs: [`apply`], and for a refusal, the refused event id is
/// remembered (a repeat is a `duplicate`, never reported twice) and reported
/// (docs/protocol.md §5): for agent events when the bot wants it, an
/// `eventRejected` webhook is queued (docs/protocol.md §4); a visitor's message
/// or `end` is answered on the widget's stream with `visitorRejected`.
pub fn step(state: &Conversation, cmd: &Command, ctx: &Context<'_>) -> Transition {
    match apply(state, cmd, ctx) {
        Ok(transition) => transition,
        Err(rejection) => {
            let mut b = Builder { next: state.clone(), effects: Vec::new(), now: ctx.now };
            if ctx.rules.report_rejections && matches!(cmd.input, Input::Agent { .. }) {
                b.webhook(WebhookEvent::EventRejected {
                    event_id: cmd.event_id.clone(),
                    code: rejection.code,
                    current_state: rejection.current_state,
                });
            }
            let code = rejection.code;
            match &cmd.input {
                Input::VisitorMessage { message_id, .. } => {
                    b.widget(WidgetEvent::VisitorRejected { code, message_id: Some(message_id.clone()) });
                }
                Input::VisitorEnd => b.widget(WidgetEvent::VisitorRejected { code, message_id: None }),
                _ => {}
            }
            b.remember(cmd);
            b.finish(Verdict::Rejected(rejection.code))
        }
    }
}

/// docs/protocol.md §5's table: state × agent event.
fn agent(
    b: &mut Builder,
    ctx: &Context<'_>,
    named: Option<&EscalationId>,
    action: &AgentAction,
    event_id: &EventId,
) -> Result<Verdict, Rejection> {
    if let Some(named) = named {
        // An event for any escalation other than the latest one is stale, even
        // if the latest one has ended: it must never touch the current state.
        if b.next.escalation.as_ref().is_none_or(|e| &e.id != named) {
            return Err(b.reject(RejectCode::StaleEscalation));
        }
    }
    let phase = b.next.phase();
    let rules_idle = ctx.rules.idle_timeout;
    match (phase, action) {
        (Phase::Idle, _) => Err(b.reject(RejectCode::NoActiveEscalation)),

        (Phase::Requested | Phase::Queued, AgentAction::QueueUpdate { queue_position, waiting_time }) => {
            b.cancel_timer(TimerKind::NoResponse);
            if phase == Phase::Requested {
                // The queue timer measures the whole wait, so only the first
                // update arms it; later updates just refresh the values.
                b.set_timer(TimerKind::Queue, ctx.rules.queue_timeout);
            }
            let esc = b.live_mut();
            esc.stage = Stage::Queued;
            esc.queue =
                Some(QueueInfo { position: queue_position.clone(), waiting_time: waiting_time.clone() });
            b.widget(WidgetEvent::EscalationQueueUpdate {
                queue_position: queue_position.clone(),
                waiting_time: waiting_time.clone(),
            });
            Ok(Verdict::Applied)
        }
        (Phase::Requested | Phase::Queued, AgentAction::Success { agent, agent_avatar }) => {
            b.cancel_timer(TimerKind::NoResponse);
            b.cancel_timer(TimerKind::Queue);
            let esc = b.live_mut();
            esc.stage = Stage::Connected;
            esc.agent = Some(Agent { name: agent.clone(), avatar: agent_avatar.clone() });
            let held = std::mem::take(&mut esc.held);
            b.widget(WidgetEvent::EscalationSuccess {
                agent: agent.clone(),
                agent_avatar: agent_avatar.clone(),
            });
            // Held visitor messages go out in order, right after the connect.
            for m in held {
                b.webhook(WebhookEvent::WidgetMessage { text: m.text, message_id: m.message_id });
            }
            b.set_timer(TimerKind::Idle, rules_idle);
            Ok(Verdict::Applied)
        }
        (Phase::Requested | Phase::Queued, AgentAction::Message { .. }) => {
            Err(b.reject(RejectCode::NotConnected))
        }
        (Phase::Requested | Phase::Queued, AgentAction::Failed) => {
            let reason = EndReason::EscalationFailed;
            b.end(OutcomeKind::Failed, reason, WidgetEvent::EscalationFailed { reason }, false);
            Ok(Verdict::Applied)
        }
        (Phase::Requested | Phase::Queued, AgentAction::Disconnect) => {
            let reason = EndReason::DisconnectedBeforeConnect;
            b.end(OutcomeKind::Failed, reason, WidgetEvent::AgentDisconnect { reason }, false);
            Ok(Verdict::Applied)
        }

        (Phase::Connected, AgentAction::QueueUpdate { .. }) => Err(b.reject(RejectCode::AlreadyConnected)),
        (Phase::Connected, AgentAction::Success { agent, agent_avatar }) => {
            let esc = b.live_mut();
            let same = esc.agent.as_ref().is_some_and(|a| &a.name == agent);
            if same {
                return Ok(Verdict::Duplicate);
            }
            esc.agent = Some(Agent { name: agent.clone(), avatar: agent_avatar.clone() });
            b.widget(WidgetEvent::AgentChanged { agent: agent.clone(), agent_avatar: agent_avatar.clone() });
            Ok(Verdict::Applied)
        }
        (Phase::Connected, AgentAction::Message { text }) => {
            // The agent event's id is the message's stable id.
            let message_id = MessageId::from(event_id.clone());
            b.widget(WidgetEvent::Message { text: text.clone(), message_id });
            b.set_timer(TimerKind::Idle, rules_idle);
            Ok(Verdict::Applied)
        }
        (Phase::Connected, AgentAction::Failed) => {
            let reason = EndReason::FailedAfterConnect;
            b.end(OutcomeKind::Ended, reason, WidgetEvent::EscalationFailed { reason }, false);
            Ok(Verdict::Applied)
        }
        (Phase::Connected, AgentAction::Disconnect) => {
            let reason = EndReason::AgentDisconnect;
            b.end(OutcomeKind::Ended, reason, WidgetEvent::AgentDisconnect { reason }, false);
            Ok(Verdict::Applied)
        }
    }
}

/// A timer fires only for the escalation it was armed for, and only if it is
/// still armed with a deadline that has passed (re-arming moves the deadline).
fn timer(b: &mut Builder, escalation_id: &EscalationId, kind: TimerKind) -> Verdict {
    let due = b
        .next
        .live()
        .filter(|e| &e.id == escalation_id)
        .and_then(|e| e.timers.get(&kind))
        .is_some_and(|deadline| *deadline <= b.now);
    if !due {
        return Verdict::Ignored;
    }
    let (kind, reason) = match kind {
        TimerKind::NoResponse => (OutcomeKind::Failed, EndReason::NoResponseTimeout),
        TimerKind::Queue => (OutcomeKind::Failed, EndReason::QueueTimeout),
        TimerKind::Idle => (OutcomeKind::Ended, EndReason::IdleTimeout),
        TimerKind::Ttl => (OutcomeKind::Ended, EndReason::TtlExpired),
    };
    b.end_with_session(kind, reason);
    Verdict::Applied
}

/// Accumulates the next state and its effects, numbering widget events and
/// webhooks as they are emitted.
struct Builder {
    next: Conversation,
    effects: Vec<Effect>,
    now: DateTime<Utc>,
}

impl Builder {
    fn reject(&self, code: RejectCode) -> Rejection {
        Rejection { code, current_state: self.next.phase() }
    }

    /// Only called in arms where `phase() != Idle`.
    fn live_mut(&mut self) -> &mut Escalation {
        match self.next.escalation.as_mut() {
            Some(e) => e,
            None => unreachable!("a live escalation exists in this phase"),
        }
    }

    fn escalation_id(&self) -> Option<EscalationId> {
        self.next.escalation.as_ref().map(|e| e.id.clone())
    }

    fn widget(&mut self, event: WidgetEvent) {
        let Some(escalation_id) = self.escalation_id() else { return };
        self.next.widget_sequence += 1;
        self.effects.push(Effect::Widget(WidgetEnvelope {
            sequence: self.next.widget_sequence,
            timestamp: self.now,
            escalation_id,
            event,
        }));
    }

    fn webhook(&mut self, event: WebhookEvent) {
        self.next.webhook_sequence += 1;
        self.effects.push(Effect::Webhook(WebhookEnvelope {
            sequence: self.next.webhook_sequence,
            timestamp: self.now,
            escalation_id: self.escalation_id(),
            event,
        }));
    }

    fn set_timer(&mut self, kind: TimerKind, after: Duration) {
        let at = crate::time::after(self.now, after);
        let esc = self.live_mut();
        esc.timers.insert(kind, at);
        let escalation_id = esc.id.clone();
        self.effects.push(Effect::SetTimer { escalation_id, kind, at });
    }

    fn cancel_timer(&mut self, kind: TimerKind) {
        let esc = self.live_mut();
        if esc.timers.remove(&kind).is_some() {
            let escalation_id = esc.id.clone();
            self.effects.push(Effect::CancelTimer { escalation_id, kind });
        }
    }

    /// Ends the live escalation: one outcome, timers disarmed, held messages
    /// dropped, the widget told; `notify_bot` adds `widgetEndSession`.
    fn end(&mut self, kind: OutcomeKind, reason: EndReason, widget: WidgetEvent, notify_bot: bool) {
        let now = self.now;
        let esc = self.live_mut();
        let timers: Vec<TimerKind> = esc.timers.keys().copied().collect();
        esc.held.clear();
        esc.outcome = Some(Outcome { kind, reason, at: now });
        self.widget(widget);
        if notify_bot {
            self.webhook(WebhookEvent::WidgetEndSession { reason });
        }
        for timer in timers {
            self.cancel_timer_of_ended(timer);
        }
    }

    fn end_with_session(&mut self, kind: OutcomeKind, reason: EndReason) {
        self.end(kind, reason, WidgetEvent::SessionEnded { reason }, true);
    }

    fn cancel_timer_of_ended(&mut self, kind: TimerKind) {
        if let Some(esc) = self.next.escalation.as_mut()
            && esc.timers.remove(&kind).is_some()
        {
            let escalation_id = esc.id.clone();
            self.effects.push(Effect::CancelTimer { escalation_id, kind });
        }
    }

    fn remember(&mut self, cmd: &Command) {
        let ids = &mut self.next.recent_event_ids;
        ids.push_back(cmd.scoped_id());
        while ids.len() > DEDUPE_WINDOW {
            ids.pop_front();
        }
    }

    fn finish(self, verdict: Verdict) -> Transition {
        Transition { next: self.next, verdict, effects: self.effects }
    }
}
