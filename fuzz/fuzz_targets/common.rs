//! The state fuzzed inputs are folded into: the example day of
//! `schemas/examples/day.ndjson` (securities, prices, a model, a household
//! with lots and restrictions), folded once.

use overlay_core::fold::{step, Applied, Input};
use overlay_core::state::State;
use std::sync::OnceLock;

const DAY: &str = include_str!("../../schemas/examples/day.ndjson");

pub fn base_state() -> &'static State {
    static BASE: OnceLock<State> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut state = State::default();
        for line in DAY.lines().filter(|l| !l.trim().is_empty()) {
            let env = overlay_core::event::decode_json(line.as_bytes()).expect("the example day decodes");
            let applied = step(&mut state, Input::Event(&env));
            assert!(applied.rejection.is_none(), "the example day applies: {:?}", applied.rejection);
        }
        state
    })
}

/// Folds one decoded (or refused) input into a copy of the base state and
/// checks what must hold for any input: a refused input is dead-lettered
/// with its reason, and every output is numbered and chained.
pub fn fold_checked(decoded: Result<&overlay_core::event::Envelope, &overlay_core::event::InputError>) {
    let mut state = base_state().clone();
    let before = state.meta.clone();
    let applied: Applied = match decoded {
        Ok(env) => step(&mut state, Input::Event(env)),
        Err(err) => {
            let applied = step(&mut state, Input::Undecodable(err));
            let (_, refused) = applied.rejection.as_ref().expect("an undecodable input is dead-lettered");
            assert_eq!(refused.kind, err.kind);
            applied
        }
    };
    assert_eq!(state.meta.applied, before.applied + 1, "every input counts once");
    if let Some((seq, err)) = &applied.rejection {
        assert_eq!(*seq, before.dead_letter_seq + 1);
        assert!(!err.message.is_empty(), "a refusal says why");
    }
    assert_eq!(applied.audit.len(), applied.audit_json.len());
    assert!(!applied.audit.is_empty(), "every input leaves an audit record");
    for (i, o) in applied.orders.iter().enumerate() {
        assert_eq!(o.seq, before.order_seq + 1 + i as u64, "orders are numbered without gaps");
        assert!(o.quantity > rust_decimal::Decimal::ZERO, "an order has a positive quantity");
    }
    for r in &applied.audit {
        assert_eq!(r.hash, overlay_core::fold::audit_hash(r), "the audit record is sealed");
    }
}
