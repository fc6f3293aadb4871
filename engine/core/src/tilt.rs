//! Tilts: a household's target moved away from its model by a stated amount
//! — a sector or sub-industry up or down, or toward the names whose
//! attribute (a dividend yield, say) is above the target's average. Pure
//! arithmetic on a weight map: the weight a tilt moves is taken from (or
//! given to) the other side pro rata, the same rule that redistributes an
//! excluded security's weight, so a tilt never makes a weight negative and
//! never makes the target sum to more than it did.

use crate::ids::SecurityId;
use crate::state::State;
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::BTreeMap;

/// Decimal places tilted weights keep (rounded toward zero, so the target
/// never grows by rounding).
pub const TILT_WEIGHT_DP: u32 = 8;

/// What one tilt did: the group's weight before and after, and the weight
/// that could not move (nothing to take it from, or no name to give it to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiltOutcome {
    pub group_before: Decimal,
    pub group_after: Decimal,
    /// Names in the group.
    pub names: usize,
}

fn down(x: Decimal) -> Decimal {
    x.round_dp_with_strategy(TILT_WEIGHT_DP, RoundingStrategy::ToZero)
}

/// Moves `delta` of weight into the group (`delta` > 0) or out of it
/// (`delta` < 0), from or to the other names pro rata to their weights.
/// A group with no weight cannot take weight (it has no names to hold it);
/// weight leaving the group when nothing else is held goes to cash.
pub fn tilt_group(
    weights: &mut BTreeMap<&SecurityId, Decimal>,
    in_group: &dyn Fn(&SecurityId) -> bool,
    delta: Decimal,
) -> TiltOutcome {
    let names = weights.iter().filter(|(s, w)| in_group(s) && **w > Decimal::ZERO).count();
    let group: Decimal = weights.iter().filter(|(s, _)| in_group(s)).map(|(_, w)| *w).sum();
    let total: Decimal = weights.values().sum();
    let rest = total - group;
    let unchanged = TiltOutcome { group_before: group, group_after: group, names };
    // Donors give `moved` pro rata; receivers take it pro rata.
    let (moved, donors_are_group) = if delta < Decimal::ZERO {
        ((-delta).min(group), true)
    } else {
        if group <= Decimal::ZERO {
            return unchanged;
        }
        (delta.min(rest), false)
    };
    if moved <= Decimal::ZERO {
        return unchanged;
    }
    let (donor_total, receiver_total) = if donors_are_group { (group, rest) } else { (rest, group) };
    let keep = (donor_total - moved) / donor_total;
    for (s, w) in weights.iter_mut() {
        let donor = in_group(s) == donors_are_group;
        if donor {
            *w = down(*w * keep);
        } else if receiver_total > Decimal::ZERO {
            *w += down(moved * *w / receiver_total);
        }
    }
    let group_after = weights.iter().filter(|(s, _)| in_group(s)).map(|(_, w)| *w).sum();
    TiltOutcome { group_before: group, group_after, names }
}

/// The target's weighted average of an attribute over the names that carry
/// it (None when no weighted name does).
pub fn weighted_average(state: &State, weights: &BTreeMap<&SecurityId, Decimal>, attribute: &str) -> Option<Decimal> {
    let (mut sum, mut weight) = (Decimal::ZERO, Decimal::ZERO);
    for (s, w) in weights {
        if let Some(v) = attribute_of(state, s, attribute) {
            sum += *w * v;
            weight += *w;
        }
    }
    (weight > Decimal::ZERO).then(|| sum / weight)
}

/// A security's attribute, if the security master gave it one.
pub fn attribute_of(state: &State, sec: &SecurityId, attribute: &str) -> Option<Decimal> {
    state.securities.get(sec).and_then(|s| s.attributes.get(attribute)).copied()
}
