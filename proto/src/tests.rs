//! Unit tests of the protobuf conversions (given / when / then).

use super::*;
use overlay_core::output::RealizedLot;
use std::collections::BTreeMap;
use std::str::FromStr;

fn d(s: &str) -> Decimal {
    Decimal::from_str_exact(s).expect("test decimal")
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::from_str(s).expect("test date")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("test time").with_timezone(&Utc)
}

fn envelope(payload: Payload) -> Envelope {
    Envelope {
        event_id: "evt-000042".into(),
        producer: "test-producer".into(),
        event_time: at("2025-03-14T20:00:01.123456Z"),
        schema_version: 1,
        payload,
    }
}

fn restriction(rule: Option<RestrictionRule>, op: EditOp) -> Payload {
    Payload::RestrictionEdited(RestrictionEdited {
        household: "HH-1001".into(),
        restriction_id: "R-7".into(),
        op,
        rule,
        account: Some("HH-1001-TAX".into()),
        effective: at("2025-03-15T13:30:00Z"),
    })
}

/// One payload of every variant, with non-default values and decimals whose
/// scale must survive ("1.50", "0.0300").
fn every_payload() -> Vec<Payload> {
    vec![
        Payload::SecurityUpserted(SecurityUpserted {
            security: "GOOGL".into(),
            name: "Alphabet Inc. Class A".into(),
            sector: "Communication Services".into(),
            sub_industry: "Interactive Media & Services".into(),
            identical_group: Some("ALPHABET".into()),
            substitutes: vec!["GOOG".into(), "META".into()],
            attributes: [("dividend_yield", "0.0050"), ("profitable", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), d(v)))
                .collect(),
        }),
        Payload::ModelPublished(ModelPublished {
            model: "US-LARGE-CAP".into(),
            version: 7,
            kind: ModelKind::DirectIndex,
            weights: vec![
                ModelWeight { security: "AAPL".into(), weight: d("0.0650") },
                ModelWeight { security: "MSFT".into(), weight: d("0.0600") },
            ],
        }),
        Payload::PriceTick(PriceTick {
            security: "AAPL".into(),
            price: d("1.50"),
            as_of: at("2025-03-14T19:59:59.000001Z"),
        }),
        Payload::EsgScoreChanged(EsgScoreChanged {
            security: "XOM".into(),
            provider: "msci".into(),
            score: d("41.20"),
            as_of: at("2025-03-14T12:00:00Z"),
        }),
        Payload::HouseholdUpserted(HouseholdUpserted {
            household: "HH-1001".into(),
            tax: TaxProfile {
                short_term_rate: d("0.408"),
                long_term_rate: d("0.238"),
                annual_gain_budget_usd: Some(d("25000.00")),
                short_term_deferral_days: 45,
                harvest: HarvestSettings {
                    enabled: true,
                    min_loss_pct: d("0.15"),
                    min_loss_usd: d("1000"),
                    swap_back: false,
                },
            },
            accounts: vec![
                AccountSpec {
                    account: "HH-1001-TAX".into(),
                    kind: AccountKind::Taxable,
                    sleeves: vec![
                        Sleeve { model: "US-LARGE-CAP".into(), percent: d("0.70") },
                        Sleeve { model: "US-DIVIDEND".into(), percent: d("0.30") },
                    ],
                    settings: AccountSettings {
                        fractional: true,
                        min_trade_usd: d("250.00"),
                        cash_reserve_pct: d("0.0200"),
                        drift_band_abs: d("0.0300"),
                        drift_band_rel: d("0.25"),
                        lot_policy: LotPolicy::Hifo,
                    },
                    opening_cash: d("15000.00"),
                    opening_lots: vec![OpeningLot {
                        security: "AAPL".into(),
                        quantity: d("120"),
                        cost_per_share: d("142.35"),
                        acquired: day("2021-06-01"),
                    }],
                },
                AccountSpec {
                    account: "HH-1001-IRA".into(),
                    kind: AccountKind::Ira,
                    sleeves: vec![Sleeve { model: "US-LARGE-CAP".into(), percent: d("1") }],
                    settings: AccountSettings::default(),
                    opening_cash: Decimal::ZERO,
                    opening_lots: vec![],
                },
            ],
            restrictions: vec![RestrictionSpec {
                restriction_id: "keep-aapl".into(),
                rule: RestrictionRule::KeepLegacy { security: "AAPL".into() },
                account: Some("HH-1001-TAX".into()),
                effective: at("2025-03-14T12:00:00Z"),
            }],
        }),
        restriction(Some(RestrictionRule::DoNotBuy { security: "XOM".into() }), EditOp::Add),
        Payload::CashFlow(CashFlow {
            household: "HH-1001".into(),
            account: "HH-1001-TAX".into(),
            kind: CashFlowKind::Withdrawal,
            amount: d("5000.00"),
        }),
        Payload::Fill(Fill {
            household: "HH-1001".into(),
            account: "HH-1001-TAX".into(),
            order_id: Some("ORD-00000017".into()),
            security: "MSFT".into(),
            side: Side::Sell,
            status: FillStatus::Partial,
            quantity: d("12.5"),
            price: d("388.4700"),
            trade_date: day("2025-03-14"),
            reason: Some("partial execution".into()),
            lots: vec![LotPick { lot_id: 3, quantity: d("12.5") }],
        }),
        Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date: day("2025-03-14") }),
        Payload::CorporateAction(CorporateAction {
            security: "NVDA".into(),
            ex_date: day("2024-06-10"),
            kind: CorporateActionKind::Split { numerator: 10, denominator: 1 },
        }),
        Payload::TaxObjectiveSet(TaxObjectiveSet {
            household: "HH-1001".into(),
            objective: TaxObjective::RealizeGains { target_usd: d("25000.00") },
        }),
        Payload::TaxObjectiveSet(TaxObjectiveSet {
            household: "HH-1001".into(),
            objective: TaxObjective::TaxNeutral { tolerance_usd: d("0") },
        }),
        Payload::TaxObjectiveSet(TaxObjectiveSet {
            household: "HH-1001".into(),
            objective: TaxObjective::HarvestLosses,
        }),
        Payload::TransitionSet(TransitionSet {
            household: "HH-1001".into(),
            plan: TransitionPlan {
                period: Frequency::Monthly,
                periods: 12,
                budget_usd: Some(d("50000.00")),
                yearly_budget_usd: Some(d("20000")),
                keep: vec!["AAPL".into(), "BRK.B".into()],
                complete_below: d("0.0150"),
            },
        }),
        Payload::WithdrawalScheduled(WithdrawalScheduled {
            household: "HH-1001".into(),
            account: "HH-1001-TAX".into(),
            schedule_id: "income".into(),
            amount: d("4000.00"),
            frequency: Frequency::Quarterly,
            first_payment: day("2025-04-01"),
            lead_days: 10,
            until: Some(day("2035-04-01")),
            yield_tilt: Some(d("0.050")),
        }),
    ]
}

fn every_rule() -> Vec<RestrictionRule> {
    vec![
        RestrictionRule::DoNotBuy { security: "XOM".into() },
        RestrictionRule::DoNotHold { security: "MO".into() },
        RestrictionRule::SectorExclusion { sector: "Energy".into() },
        RestrictionRule::EsgMinimum { min_score: d("55.0"), mode: EsgMode::NoNewBuys },
        RestrictionRule::EsgMinimum { min_score: d("40"), mode: EsgMode::Divest },
        RestrictionRule::KeepLegacy { security: "JNJ".into() },
        RestrictionRule::MaxWeight { security: "AAPL".into(), max_weight: d("0.050") },
        RestrictionRule::Substitute { security: "GOOGL".into(), substitute: "GOOG".into() },
        RestrictionRule::Tilt { sector: Some("Information Technology".into()), sub_industry: None, delta: d("-0.050") },
        RestrictionRule::Tilt { sector: None, sub_industry: Some("Semiconductors".into()), delta: d("0.02") },
        RestrictionRule::AttributeTilt { attribute: "dividend_yield".into(), delta: d("0.10") },
        RestrictionRule::AttributeFilter {
            attribute: "risk_rating".into(),
            min: None,
            max: Some(d("4")),
            max_weight: Some(d("0.010")),
        },
        RestrictionRule::AttributeFilter {
            attribute: "profitable".into(),
            min: Some(d("1")),
            max: None,
            max_weight: None,
        },
    ]
}

fn err_of(bytes: &[u8]) -> InputError {
    decode_envelope(bytes).expect_err("decoding should fail")
}

fn encode_pb(msg: &pb::Envelope) -> Vec<u8> {
    msg.encode_to_vec()
}

fn price_tick_pb(price: &str) -> pb::Envelope {
    let mut msg = pb::Envelope::from(&envelope(Payload::PriceTick(PriceTick {
        security: "AAPL".into(),
        price: d("1"),
        as_of: at("2025-03-14T20:00:00Z"),
    })));
    if let Some(pb::envelope::Payload::PriceTick(t)) = msg.payload.as_mut() {
        t.price = price.to_string();
    }
    msg
}

#[test]
fn every_payload_variant_round_trips_exactly() {
    let payloads = every_payload();
    // given one event of every payload type
    let names: std::collections::BTreeSet<_> = payloads.iter().map(Payload::type_name).collect();
    assert_eq!(names.len(), 13, "one payload per variant");
    for payload in payloads {
        let env = envelope(payload);
        // when it goes to protobuf and back
        let back = decode_envelope(&encode_envelope(&env));
        // then it is equal, decimal scale included
        assert_eq!(back.as_ref(), Ok(&env), "{}", env.payload.type_name());
        let back = back.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_string(&back).ok(),
            serde_json::to_string(&env).ok(),
            "same canonical JSON for {}",
            env.payload.type_name()
        );
    }
}

#[test]
fn every_restriction_rule_kind_round_trips() {
    for rule in every_rule() {
        // given a restriction edit carrying the rule
        let env = envelope(restriction(Some(rule.clone()), EditOp::Change));
        // when / then
        assert_eq!(decode_envelope(&encode_envelope(&env)), Ok(env), "{rule:?}");
    }
    // and a removal without a rule or account
    let mut env = envelope(restriction(None, EditOp::Remove));
    if let Payload::RestrictionEdited(r) = &mut env.payload {
        r.account = None;
    }
    assert_eq!(decode_envelope(&encode_envelope(&env)), Ok(env));
}

#[test]
fn unset_optional_fields_take_the_json_defaults() {
    // given a household whose tax profile, settings, kind and opening cash are absent
    let msg = pb::Envelope {
        event_id: "e1".into(),
        producer: "crm".into(),
        event_time: 0,
        schema_version: 1,
        payload: Some(pb::envelope::Payload::HouseholdUpserted(pb::HouseholdUpserted {
            household: "HH-1".into(),
            tax: None,
            accounts: vec![pb::AccountSpec {
                account: "A".into(),
                settings: Some(pb::AccountSettings { drift_band_abs: Some("0.05".into()), ..Default::default() }),
                ..Default::default()
            }],
            restrictions: vec![],
        })),
    };
    // when
    let env = decode_envelope(&encode_pb(&msg)).expect("decodes");
    // then it equals the JSON form with those fields left out
    let json = br#"{"event_id":"e1","producer":"crm","event_time":"1970-01-01T00:00:00Z","schema_version":1,
        "payload":{"type":"household_upserted","household":"HH-1",
        "accounts":[{"account":"A","settings":{"drift_band_abs":"0.05"}}]}}"#;
    assert_eq!(Ok(env), overlay_core::event::decode_json(json));
}

#[test]
fn garbage_bytes_are_malformed() {
    // given bytes that are not protobuf (a truncated length-delimited field)
    let err = err_of(&[0x0a, 0xff, 0xff, 0x01, b'x']);
    // then
    assert_eq!(err.kind, InputErrorKind::Malformed);
    assert!(err.message.contains("not a valid protobuf"), "{err}");
    // and JSON text is not an envelope either
    assert_eq!(err_of(br#"{"event_id":"x"}"#).kind, InputErrorKind::Malformed);
}

#[test]
fn a_missing_payload_is_malformed() {
    // given an envelope with no payload set
    let mut msg = price_tick_pb("1");
    msg.payload = None;
    // when
    let err = err_of(&encode_pb(&msg));
    // then
    assert_eq!(err.kind, InputErrorKind::Malformed);
    assert!(err.message.contains("payload"), "{err}");
}

#[test]
fn a_bad_decimal_is_malformed_and_names_the_field() {
    for bad in ["12.3.4", "abc", "", "1e3", "+1.5", ".5", "1_000", " 1", "79228162514264337593543950336"] {
        // given a price that is not exact decimal text
        // when
        let err = err_of(&encode_pb(&price_tick_pb(bad)));
        // then
        assert_eq!(err.kind, InputErrorKind::Malformed, "{bad:?}");
        assert!(err.message.contains("price_tick.price"), "{bad:?}: {err}");
    }
    // and a bad decimal deep in a household names its path
    let mut msg = pb::Envelope::from(&envelope(every_payload().swap_remove(4)));
    if let Some(pb::envelope::Payload::HouseholdUpserted(h)) = msg.payload.as_mut() {
        h.accounts[0].opening_lots[0].quantity = "ten".into();
    }
    let err = err_of(&encode_pb(&msg));
    assert_eq!(err.kind, InputErrorKind::Malformed);
    assert!(err.message.contains("household_upserted.accounts[0].opening_lots[0].quantity"), "{err}");
}

#[test]
fn bad_dates_times_and_enums_are_malformed() {
    let clock = |kind: i32, date: &str| pb::Envelope {
        payload: Some(pb::envelope::Payload::Clock(pb::Clock { kind, trade_date: date.into() })),
        ..price_tick_pb("1")
    };
    let cases = [
        (clock(pb::ClockKind::Review as i32, "2025-02-30"), "clock.trade_date"),
        (clock(pb::ClockKind::Review as i32, "2025-3-1"), "clock.trade_date"),
        (clock(pb::ClockKind::Review as i32, ""), "clock.trade_date"),
        (clock(pb::ClockKind::Unspecified as i32, "2025-03-14"), "clock.kind is unspecified"),
        (clock(99, "2025-03-14"), "clock.kind: 99"),
        (pb::Envelope { event_time: i64::MAX, ..price_tick_pb("1") }, "event_time"),
        (
            pb::Envelope {
                payload: Some(pb::envelope::Payload::CorporateAction(pb::CorporateAction {
                    security: "NVDA".into(),
                    ex_date: "2024-06-10".into(),
                    action: None,
                })),
                ..price_tick_pb("1")
            },
            "corporate_action.action is missing",
        ),
        (
            pb::Envelope {
                payload: Some(pb::envelope::Payload::RestrictionEdited(pb::RestrictionEdited {
                    household: "HH-1".into(),
                    restriction_id: "R-1".into(),
                    op: pb::EditOp::Add as i32,
                    rule: Some(pb::RestrictionRule { kind: None }),
                    account: None,
                    effective: 0,
                })),
                ..price_tick_pb("1")
            },
            "restriction_edited.rule.kind is missing",
        ),
    ];
    for (msg, expected) in cases {
        // when
        let err = err_of(&encode_pb(&msg));
        // then
        assert_eq!(err.kind, InputErrorKind::Malformed, "{expected}");
        assert!(err.message.contains(expected), "expected {expected:?} in {err}");
    }
}

#[test]
fn json_times_the_wire_cannot_carry_are_invalid() {
    // A leap second (found by fuzzing: protobuf read it back as the next
    // minute) and a nanosecond would each make the JSON and protobuf forms of
    // one event fold differently.
    for (as_of, expected) in
        [("2025-03-14T20:00:60Z", "leap second"), ("2025-03-14T20:00:00.000000001Z", "sub-microsecond")]
    {
        // given a price tick published as JSON with that time
        let json = format!(
            r#"{{"event_id":"e1","producer":"market-data","event_time":"2025-03-14T20:00:00Z","schema_version":1,
            "payload":{{"type":"price_tick","security":"MSFT","price":"388.56","as_of":"{as_of}"}}}}"#
        );
        // when
        let err = overlay_core::event::decode_json(json.as_bytes()).expect_err(as_of);
        // then it is refused, naming the field
        assert_eq!(err.kind, InputErrorKind::InvalidValue, "{as_of}");
        assert!(err.message.contains("as_of") && err.message.contains(expected), "{as_of}: {err}");
    }
}

#[test]
fn json_dates_the_wire_cannot_carry_are_invalid() {
    // A signed year (found by fuzzing: chrono reads "-025-03-14" as the year
    // -25, and the protobuf form, YYYY-MM-DD, refuses what it writes).
    let clock = |date: &str| {
        format!(
            r#"{{"event_id":"c1","producer":"scheduler","event_time":"2025-03-14T20:15:00Z","schema_version":1,
            "payload":{{"type":"clock","kind":"market_close","trade_date":"{date}"}}}}"#
        )
    };
    // given a clock event published as JSON with such a trade date, when decoded
    let err = overlay_core::event::decode_json(clock("-025-03-14").as_bytes()).expect_err("a signed year");
    // then it is refused, naming the field
    assert_eq!(err.kind, InputErrorKind::InvalidValue);
    assert!(err.message.contains("trade_date -0025-03-14 is outside the years 0000 to 9999"), "{err}");
    // and the years it takes, the protobuf form carries both ways
    for date in ["0000-01-01", "2025-03-14", "9999-12-31"] {
        let env = overlay_core::event::decode_json(clock(date).as_bytes()).expect(date);
        assert_eq!(crate::decode_envelope(&crate::encode_envelope(&env)).expect(date), env, "{date}");
    }
}

#[test]
fn schema_version_2_is_unsupported() {
    // given a well-formed event of a future schema version
    let msg = pb::Envelope { schema_version: 2, ..price_tick_pb("187.25") };
    // when
    let err = err_of(&encode_pb(&msg));
    // then it is refused as such, naming the event (for its dead letter)
    assert_eq!(err.kind, InputErrorKind::UnsupportedSchemaVersion);
    assert_eq!(err.event_id.as_deref(), Some(msg.event_id.as_str()));
    assert_eq!(err.event_type, Some("price_tick"));
}

#[test]
fn a_negative_quantity_is_an_invalid_value() {
    // given a fill with a negative quantity (well-formed, but out of domain)
    let mut msg = pb::Envelope::from(&envelope(every_payload().swap_remove(7)));
    if let Some(pb::envelope::Payload::Fill(f)) = msg.payload.as_mut() {
        f.quantity = "-5".into();
    }
    // when
    let err = err_of(&encode_pb(&msg));
    // then validation refuses it
    assert_eq!(err.kind, InputErrorKind::InvalidValue);
    assert!(err.message.contains("quantity"), "{err}");
}

#[test]
fn an_order_encodes_every_field() {
    // given a sell with two relieved lots
    let order = Order {
        order_id: "ORD-00000017".into(),
        seq: 17,
        household: "HH-1001".into(),
        account: "HH-1001-TAX".into(),
        security: "MSFT".into(),
        side: Side::Sell,
        quantity: d("25"),
        ref_price: d("388.47"),
        reason: OrderReason::Harvest,
        lots: vec![
            LotRelief {
                lot_id: 3,
                quantity: d("20"),
                cost_per_share: d("420.10"),
                est_gain_usd: d("-632.60"),
                long_term: false,
            },
            LotRelief {
                lot_id: 9,
                quantity: d("5"),
                cost_per_share: d("401.00"),
                est_gain_usd: d("-62.65"),
                long_term: true,
            },
        ],
        cause_event_id: "evt-000042".into(),
        decided_at: at("2025-03-14T20:00:01.5Z"),
    };
    // when
    let msg = pb::Order::decode(encode_order(&order).as_slice()).expect("decodes");
    // then
    assert_eq!(msg.side(), pb::Side::Sell);
    assert_eq!(msg.reason(), pb::OrderReason::Harvest);
    assert_eq!((msg.quantity.as_str(), msg.ref_price.as_str()), ("25", "388.47"));
    assert_eq!(msg.lots.len(), 2);
    assert_eq!(msg.lots[0].est_gain_usd, "-632.60");
    assert!(msg.lots[1].long_term);
    assert_eq!(msg.decided_at, 1_741_982_401_500_000);
}

#[test]
fn an_audit_record_encodes_its_body_and_maps_in_key_order() {
    // given a decision record
    let inputs = DecisionInputs {
        state_version: 12,
        account_value_usd: d("250000.00"),
        cash_usd: d("1200.50"),
        models: BTreeMap::from([("US-LARGE-CAP".into(), 7)]),
        restrictions: BTreeMap::from([("R-7".into(), 2)]),
        prices: BTreeMap::from([("MSFT".into(), d("388.47")), ("AAPL".into(), d("213.49"))]),
    };
    let record = AuditRecord {
        seq: 40,
        stream: "HH-1001".into(),
        stream_seq: 9,
        event_id: Some("evt-000042".into()),
        at: Some(at("2025-03-14T20:00:01Z")),
        household: Some("HH-1001".into()),
        body: AuditBody::Decision {
            account: "HH-1001-TAX".into(),
            rules: vec!["harvest".into()],
            inputs,
            orders: vec!["ORD-00000017".into()],
            skipped: vec![Skip {
                security: "XOM".into(),
                side: Side::Buy,
                reason: SkipReason::Restricted,
                detail: "do_not_buy R-7".into(),
            }],
        },
        prev_hash: "ab".repeat(32),
        hash: "cd".repeat(32),
    };
    // when it is encoded twice
    let bytes = encode_audit_record(&record);
    assert_eq!(bytes, encode_audit_record(&record), "deterministic bytes");
    let msg = pb::AuditRecord::decode(bytes.as_slice()).expect("decodes");
    // then
    let Some(pb::audit_record::Body::Decision(dec)) = msg.body else { panic!("decision body") };
    let inputs = dec.inputs.expect("inputs");
    assert_eq!(inputs.prices.keys().collect::<Vec<_>>(), ["AAPL", "MSFT"]);
    assert_eq!(inputs.prices["MSFT"], "388.47");
    assert_eq!(dec.skipped[0].reason(), pb::SkipReason::Restricted);
    assert_eq!(msg.at, Some(1_741_982_401_000_000));

    // and the other bodies
    let bodies = [
        AuditBody::Applied { event_type: "price_tick".into(), summary: "AAPL 213.49".into() },
        AuditBody::Rejected { event_type: None, error: InputErrorKind::Malformed, reason: "bad".into() },
        AuditBody::Duplicate { event_type: "fill".into(), first_seq: 3 },
        AuditBody::Tax {
            account: "A".into(),
            security: "MSFT".into(),
            trade_date: day("2025-03-14"),
            quantity: d("10"),
            price: d("388.47"),
            lots: vec![RealizedLot {
                lot_id: 3,
                quantity: d("10"),
                cost_per_share: d("389.70"),
                acquired: day("2024-01-05"),
                holding_start: day("2024-01-05"),
                gain_usd: d("-12.30"),
                long_term: true,
            }],
            short_term_usd: d("0"),
            long_term_usd: d("-12.30"),
            realized_usd: d("-12.30"),
            reportable: true,
            detail: "realized".into(),
        },
        AuditBody::WashSale {
            sale_event_id: "fill-1".into(),
            sale_account: "A".into(),
            security: "MSFT".into(),
            sale_date: day("2025-03-14"),
            sold_lot_id: 3,
            replacement_account: "I".into(),
            replacement_security: "MSFT".into(),
            replacement_lot_id: 1,
            replacement_date: day("2025-03-20"),
            shares: d("10"),
            disallowed_usd: d("12.30"),
            basis_added: false,
            holding_start: day("2025-03-20"),
            detail: "wash sale".into(),
        },
    ];
    for body in bodies {
        let r = AuditRecord { body, at: None, event_id: None, household: None, ..record.clone() };
        let msg = pb::AuditRecord::decode(encode_audit_record(&r).as_slice()).expect("decodes");
        assert!(msg.body.is_some() && msg.at.is_none() && msg.household.is_none());
        if let Some(pb::audit_record::Body::Rejected(rej)) = &msg.body {
            assert_eq!((rej.error(), rej.event_type.as_deref()), (pb::InputErrorKind::Malformed, None));
        }
    }
}

#[test]
fn a_dead_letter_encodes_every_field() {
    // given
    let letter = DeadLetter {
        seq: 5,
        event_id: None,
        error: InputErrorKind::UnsupportedSchemaVersion,
        reason: "schema_version 2 is not supported".into(),
        source: "overlay.events/3/1200".into(),
        raw_hex: "0a0165".into(),
    };
    // when
    let msg = pb::DeadLetter::decode(encode_dead_letter(&letter).as_slice()).expect("decodes");
    // then
    assert_eq!(msg.error(), pb::InputErrorKind::UnsupportedSchemaVersion);
    assert_eq!(
        (msg.seq, msg.event_id, msg.source.as_str(), msg.raw_hex.as_str()),
        (5, None, "overlay.events/3/1200", "0a0165")
    );
}

mod price_tick_bytes {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Mostly valid, so that changed bytes often still decode.
        prop_oneof![
            6 => "[A-Za-z0-9._-]{1,12}",
            1 => Just(String::new()),
            1 => "[ -~]{0,8}",
            1 => any::<String>().prop_map(|s| s.chars().take(6).collect()),
        ]
    }

    fn price() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => (1u64..10_000_000, 0u32..6).prop_map(|(n, scale)| Decimal::new(n as i64, scale).to_string()),
            1 => Just("0".to_string()),
            1 => Just("-1.5".to_string()),
            1 => Just("1e3".to_string()),
            1 => "[0-9.+-]{0,40}",
        ]
    }

    fn micros() -> impl Strategy<Value = i64> {
        prop_oneof![6 => 1_400_000_000_000_000i64..1_500_000_000_000_000, 1 => any::<i64>(), 1 => Just(0i64)]
    }

    prop_compose! {
        fn tick_bytes()(
            event_id in text(),
            producer in text(),
            event_time in micros(),
            schema_version in prop_oneof![6 => Just(1u32), 1 => Just(0u32), 1 => any::<u32>()],
            security in text(),
            price in price(),
            as_of in micros(),
        ) -> Vec<u8> {
            pb::Envelope {
                event_id,
                producer,
                event_time,
                schema_version,
                payload: Some(pb::envelope::Payload::PriceTick(pb::PriceTick { security, price, as_of })),
            }
            .encode_to_vec()
        }
    }

    /// Bytes changed as a broken or hostile producer might: a byte changed,
    /// cut short, a byte put in, or two parts swapped.
    fn mangled() -> impl Strategy<Value = Vec<u8>> {
        (tick_bytes(), 0usize..4, any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(mut b, how, i, j, x)| {
                if b.is_empty() {
                    return b;
                }
                let (i, j) = (i.index(b.len()), j.index(b.len()));
                match how {
                    0 => b[i] = x,
                    1 => b.truncate(i),
                    2 => b.insert(i, x),
                    _ => {
                        let (lo, hi) = (i.min(j), i.max(j));
                        b[lo..].rotate_left(hi - lo);
                    }
                }
                b
            },
        )
    }

    proptest! {
        #[test]
        fn a_tick_as_prost_writes_it_is_read_straight_with_the_general_result(bytes in tick_bytes()) {
            // given a price tick envelope as prost encodes it, valid or not
            // when it is read straight from its bytes
            let straight = wire::price_tick(&bytes);
            // then it is (never left to the general path), and gives what the general path gives
            prop_assert!(straight.is_some());
            prop_assert_eq!(straight.unwrap(), decode_general(&bytes));
        }

        #[test]
        fn a_tick_decoded_over_an_earlier_result_is_what_it_decodes_to_alone(
            earlier in prop_oneof![tick_bytes(), mangled()],
            bytes in prop_oneof![tick_bytes(), mangled()],
        ) {
            // given what an earlier input decoded to (a tick, or an error)
            let mut out = decode_envelope(&earlier);
            // when a tick, valid or not, is decoded over it
            decode_envelope_into(&bytes, &mut out);
            // then the result is the general path's, with nothing of the earlier one left
            prop_assert_eq!(out, decode_general(&bytes));
        }

        #[test]
        fn changed_bytes_decode_as_the_general_path_decodes_them(bytes in mangled()) {
            // given the bytes of a tick with a byte changed, cut, added or parts swapped
            // when they are decoded
            // then the result is the general path's, whichever path read them
            if let Some(straight) = wire::price_tick(&bytes) {
                prop_assert_eq!(straight, decode_general(&bytes));
            }
            prop_assert_eq!(decode_envelope(&bytes), decode_general(&bytes));
        }
    }

    #[test]
    fn other_payloads_and_unusual_layouts_are_left_to_the_general_path() {
        // given a model, and a tick whose fields come out of order, repeated or with an unknown one
        let model = encode_envelope(&envelope(every_payload().remove(1)));
        let tick = price_tick_pb("12.50").encode_to_vec();
        let reordered = [&tick[tick.len() - 20..], &tick[..tick.len() - 20]].concat();
        let repeated = [&tick[..], &tick[..]].concat();
        let unknown = [&tick[..], &[0x28, 0x01][..]].concat();
        // then the fast path reads only the tick, and every one decodes as the general path decodes it
        assert!(wire::price_tick(&tick).is_some());
        for b in [&model, &reordered, &repeated, &unknown] {
            assert!(wire::price_tick(b).is_none());
            assert_eq!(decode_envelope(b), decode_general(b));
        }
    }
}
