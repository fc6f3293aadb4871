#!/usr/bin/env python3
"""A third-party Kafka client of the overlay engine, written from the wire
contract alone (docs/kafka.md, proto/overlay/v1/events.proto): Python's
confluent-kafka (PyPI; it bundles its own librdkafka) and the official
protobuf runtime. The end-to-end tests use it as an independent producer and
consumer (tests/tests/e2e/kafka_clients.rs); it is also the example for
producers in other languages.

    kafka_client.py publish --brokers HOST:PORT EVENTS.ndjson
        Each JSON event (the form of schemas/event.schema.json, one per line)
        becomes an overlay.v1.Envelope, converted field by field, produced to
        its topic with its key and headers. Prints one JSON line per record
        the broker acknowledged: event_id, topic, key, partition, offset.

    kafka_client.py encode EVENTS.ndjson
        The records publish would produce, without a broker: one JSON line
        per event with topic, key, headers, timestamp_ms and value_hex.

    kafka_client.py read --brokers HOST:PORT TOPIC
        Every committed record of TOPIC (all partitions, from the start to the
        end; isolation.level=read_committed), one JSON line each: topic,
        partition, offset, key, headers and the value (JSON outputs parsed;
        protobuf inputs decoded, and their bytes in hex; anything else in hex).

The .proto files are compiled at start-up with grpcio-tools' bundled protoc
into a temporary directory, so no generated code is kept in the repository.
Needs: python3 -c "import confluent_kafka, google.protobuf, grpc_tools".
`bash scripts/setup-kafka-python` installs them, pinned, in a virtualenv and
prints its interpreter (`bash scripts/setup-kafka` installs them too).
"""

import argparse
import calendar
import datetime
import importlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING
from google.protobuf import json_format

PROTO_DIR_DEFAULT = Path(__file__).resolve().parents[2] / "proto"
PROTO_FILES = ["overlay/v1/events.proto"]

REFERENCE = "overlay.reference"
HOUSEHOLDS = "overlay.households"
HEADER_SCHEMA_VERSION = "overlay-schema-version"
HEADER_EVENT_TYPE = "overlay-event-type"
HEADER_CONTENT_TYPE = "content-type"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"

# Bounds: how long a publish or a read may take, and how many records one
# read returns before it gives up (a runaway topic is an error, not a hang).
TIMEOUT_S_DEFAULT = 60.0
READ_RECORDS_MAX = 1_000_000
EVENTS_MAX = 1_000_000

DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
INSTANT = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


class BadEvent(ValueError):
    """A JSON event that does not fit the schema; names the field."""


# ---------------------------------------------------------------------------
# Protobuf classes, compiled from the project's .proto files at start-up
# ---------------------------------------------------------------------------


def load_events_pb2(proto_dir, out_dir):
    """Compiles events.proto with grpcio-tools' protoc into out_dir and imports it."""
    from grpc_tools import protoc

    for f in PROTO_FILES:
        if not (proto_dir / f).is_file():
            sys.exit(f"kafka_client: {proto_dir / f} not found (--proto-dir)")
    code = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", *PROTO_FILES])
    if code != 0:
        sys.exit(f"kafka_client: protoc failed ({code}) on {PROTO_FILES} in {proto_dir}")
    sys.path.insert(0, str(out_dir))
    module = importlib.import_module("overlay.v1.events_pb2")
    # The module must be the one just generated, not a stray `overlay` package.
    assert Path(module.__file__).resolve().is_relative_to(Path(out_dir).resolve()), module.__file__
    return module


# ---------------------------------------------------------------------------
# JSON event -> protobuf Envelope, field by field (events.proto conventions:
# decimals as exact text, dates YYYY-MM-DD, instants int64 Unix microseconds
# UTC, enums NAME_PREFIX_VALUE, `optional` fields set only when present)
# ---------------------------------------------------------------------------


def fields(obj, path, required, optional=()):
    """The JSON object at `path`, refusing missing and unknown fields (so no data is silently dropped)."""
    if not isinstance(obj, dict):
        raise BadEvent(f"{path} is not an object")
    missing = [f for f in required if f not in obj]
    unknown = sorted(set(obj) - set(required) - set(optional))
    if missing:
        raise BadEvent(f"{path}: missing {', '.join(missing)}")
    if unknown:
        raise BadEvent(f"{path}: unknown field {', '.join(unknown)}")
    return obj


def text(v, path):
    if not isinstance(v, str):
        raise BadEvent(f"{path} is not a string")
    return v


def decimal(v, path):
    # Exact decimal text, passed on unchanged ("1.50" stays "1.50"); never a float.
    if not isinstance(v, str) or not DECIMAL.match(v):
        raise BadEvent(f"{path} is not a decimal string: {v!r}")
    return v


def date(v, path):
    if not isinstance(v, str) or not DATE.match(v):
        raise BadEvent(f"{path} is not a YYYY-MM-DD date: {v!r}")
    datetime.date.fromisoformat(v)  # a real calendar date
    return v


def instant_micros(v, path):
    """RFC 3339 text -> Unix microseconds UTC; finer digits are truncated (floor), as the engine does."""
    m = INSTANT.match(v) if isinstance(v, str) else None
    if not m:
        raise BadEvent(f"{path} is not an RFC 3339 instant: {v!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    datetime.datetime(y, mo, d, h, mi, s)  # a real calendar time (raises otherwise)
    frac, zone = m.group(7) or ".", m.group(8)
    offset_s = 0
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        offset_s = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    seconds = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) - offset_s
    return seconds * 1_000_000 + int(frac[1:7].ljust(6, "0"))


def unsigned(v, path):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise BadEvent(f"{path} is not a non-negative integer: {v!r}")
    return v


def boolean(v, path):
    if not isinstance(v, bool):
        raise BadEvent(f"{path} is not a boolean: {v!r}")
    return v


def enum(pb_enum, prefix, v, path):
    """JSON "market_close" -> CLOCK_KIND_MARKET_CLOSE; the UNSPECIFIED zero is never produced."""
    name = f"{prefix}_{text(v, path).upper()}"
    if not v or name.endswith("_UNSPECIFIED") or name not in pb_enum.keys():
        raise BadEvent(f"{path}: unknown value {v!r}")
    return pb_enum.Value(name)


def security_upserted(pb, j, m, path):
    fields(j, path, ["security", "sector"], ["name", "sub_industry", "identical_group", "substitutes", "attributes"])
    m.security = text(j["security"], f"{path}.security")
    m.name = text(j.get("name", ""), f"{path}.name")
    m.sector = text(j["sector"], f"{path}.sector")
    m.sub_industry = text(j.get("sub_industry", ""), f"{path}.sub_industry")
    if "identical_group" in j:
        m.identical_group = text(j["identical_group"], f"{path}.identical_group")
    m.substitutes.extend(text(s, f"{path}.substitutes[{i}]") for i, s in enumerate(j.get("substitutes", [])))
    attributes = j.get("attributes", {})
    if not isinstance(attributes, dict):
        raise BadEvent(f"{path}.attributes is not an object")
    for name, value in attributes.items():
        m.attributes[text(name, f"{path}.attributes")] = decimal(value, f"{path}.attributes.{name}")


def model_published(pb, j, m, path):
    fields(j, path, ["model", "version", "weights"], ["kind"])
    m.model = text(j["model"], f"{path}.model")
    m.version = unsigned(j["version"], f"{path}.version")
    if "kind" in j:
        m.kind = enum(pb.ModelKind, "MODEL_KIND", j["kind"], f"{path}.kind")
    for i, w in enumerate(j["weights"]):
        p = f"{path}.weights[{i}]"
        fields(w, p, ["security", "weight"])
        m.weights.add(security=text(w["security"], f"{p}.security"), weight=decimal(w["weight"], f"{p}.weight"))


def price_tick(pb, j, m, path):
    fields(j, path, ["security", "price", "as_of"])
    m.security = text(j["security"], f"{path}.security")
    m.price = decimal(j["price"], f"{path}.price")
    m.as_of = instant_micros(j["as_of"], f"{path}.as_of")


def esg_score_changed(pb, j, m, path):
    fields(j, path, ["security", "provider", "score", "as_of"])
    m.security = text(j["security"], f"{path}.security")
    m.provider = text(j["provider"], f"{path}.provider")
    m.score = decimal(j["score"], f"{path}.score")
    m.as_of = instant_micros(j["as_of"], f"{path}.as_of")


def corporate_action(pb, j, m, path):
    """{"action": "split", "numerator": 7, "denominator": 1, …} -> CorporateAction{split: Split{7, 1}}."""
    if fields(j, path, ["action"], ["security", "ex_date", "numerator", "denominator"])["action"] != "split":
        raise BadEvent(f"{path}.action: unknown value {j['action']!r}")
    fields(j, path, ["security", "ex_date", "action", "numerator", "denominator"])
    m.security = text(j["security"], f"{path}.security")
    m.ex_date = date(j["ex_date"], f"{path}.ex_date")
    m.split.numerator = unsigned(j["numerator"], f"{path}.numerator")
    m.split.denominator = unsigned(j["denominator"], f"{path}.denominator")


def clock(pb, j, m, path):
    fields(j, path, ["kind", "trade_date"])
    m.kind = enum(pb.ClockKind, "CLOCK_KIND", j["kind"], f"{path}.kind")
    m.trade_date = date(j["trade_date"], f"{path}.trade_date")


RULE_FIELDS = {
    "do_not_buy": ["security"],
    "do_not_hold": ["security"],
    "sector_exclusion": ["sector"],
    "esg_minimum": ["min_score", "mode"],
    "keep_legacy": ["security"],
    "max_weight": ["security", "max_weight"],
    "substitute": ["security", "substitute"],
    "attribute_tilt": ["attribute", "delta"],
}
# Kinds with optional fields: (required, optional).
RULE_OPTIONAL = {
    "tilt": (["delta"], ["sector", "sub_industry"]),
    "attribute_filter": (["attribute"], ["min", "max", "max_weight"]),
}
RULE_DECIMALS = {"min_score", "max_weight", "delta", "min", "max"}


def restriction_rule(pb, j, m, path):
    """{"kind": "max_weight", "security": …, "max_weight": …} -> RestrictionRule{max_weight: MaxWeight{…}}."""
    every = [f for fs in RULE_FIELDS.values() for f in fs] + [f for r, o in RULE_OPTIONAL.values() for f in r + o]
    kind = text(fields(j, path, ["kind"], every)["kind"], f"{path}.kind")
    if kind in RULE_FIELDS:
        required, optional = RULE_FIELDS[kind], []
    elif kind in RULE_OPTIONAL:
        required, optional = RULE_OPTIONAL[kind]
    else:
        raise BadEvent(f"{path}.kind: unknown value {kind!r}")
    fields(j, path, ["kind", *required], optional)
    sub = getattr(m, kind)
    sub.SetInParent()  # a rule kind with every field empty is still that kind
    for f in [*required, *(o for o in optional if o in j)]:
        p = f"{path}.{f}"
        if f == "mode":
            sub.mode = enum(pb.EsgMode, "ESG_MODE", j[f], p)
        elif f in RULE_DECIMALS:
            setattr(sub, f, decimal(j[f], p))
        else:
            setattr(sub, f, text(j[f], p))


def tax_profile(pb, j, m, path):
    fields(j, path, [], ["short_term_rate", "long_term_rate", "annual_gain_budget_usd", "short_term_deferral_days", "harvest"])
    m.SetInParent()  # present, even with every field left to its default
    for f in ["short_term_rate", "long_term_rate", "annual_gain_budget_usd"]:
        if f in j:
            setattr(m, f, decimal(j[f], f"{path}.{f}"))
    if "short_term_deferral_days" in j:
        m.short_term_deferral_days = unsigned(j["short_term_deferral_days"], f"{path}.short_term_deferral_days")
    if "harvest" in j:
        h, hp = j["harvest"], f"{path}.harvest"
        fields(h, hp, [], ["enabled", "min_loss_pct", "min_loss_usd", "swap_back"])
        m.harvest.SetInParent()
        for f in ["enabled", "swap_back"]:
            if f in h:
                setattr(m.harvest, f, boolean(h[f], f"{hp}.{f}"))
        for f in ["min_loss_pct", "min_loss_usd"]:
            if f in h:
                setattr(m.harvest, f, decimal(h[f], f"{hp}.{f}"))


def account_spec(pb, j, m, path):
    fields(j, path, ["account"], ["kind", "sleeves", "settings", "opening_cash", "opening_lots"])
    m.account = text(j["account"], f"{path}.account")
    if "kind" in j:
        m.kind = enum(pb.AccountKind, "ACCOUNT_KIND", j["kind"], f"{path}.kind")
    for i, s in enumerate(j.get("sleeves", [])):
        p = f"{path}.sleeves[{i}]"
        fields(s, p, ["model", "percent"])
        m.sleeves.add(model=text(s["model"], f"{p}.model"), percent=decimal(s["percent"], f"{p}.percent"))
    if "settings" in j:
        s, sp = j["settings"], f"{path}.settings"
        decimals = ["min_trade_usd", "cash_reserve_pct", "drift_band_abs", "drift_band_rel"]
        fields(s, sp, [], ["fractional", "lot_policy", *decimals])
        m.settings.SetInParent()
        if "fractional" in s:
            m.settings.fractional = boolean(s["fractional"], f"{sp}.fractional")
        for f in decimals:
            if f in s:
                setattr(m.settings, f, decimal(s[f], f"{sp}.{f}"))
        if "lot_policy" in s:
            m.settings.lot_policy = enum(pb.LotPolicy, "LOT_POLICY", s["lot_policy"], f"{sp}.lot_policy")
    if "opening_cash" in j:
        m.opening_cash = decimal(j["opening_cash"], f"{path}.opening_cash")
    for i, lot in enumerate(j.get("opening_lots", [])):
        p = f"{path}.opening_lots[{i}]"
        fields(lot, p, ["security", "quantity", "cost_per_share", "acquired"])
        m.opening_lots.add(
            security=text(lot["security"], f"{p}.security"),
            quantity=decimal(lot["quantity"], f"{p}.quantity"),
            cost_per_share=decimal(lot["cost_per_share"], f"{p}.cost_per_share"),
            acquired=date(lot["acquired"], f"{p}.acquired"),
        )


def household_upserted(pb, j, m, path):
    fields(j, path, ["household", "accounts"], ["tax", "restrictions"])
    m.household = text(j["household"], f"{path}.household")
    if "tax" in j:
        tax_profile(pb, j["tax"], m.tax, f"{path}.tax")
    for i, a in enumerate(j["accounts"]):
        account_spec(pb, a, m.accounts.add(), f"{path}.accounts[{i}]")
    for i, r in enumerate(j.get("restrictions", [])):
        p = f"{path}.restrictions[{i}]"
        fields(r, p, ["restriction_id", "rule", "effective"], ["account"])
        spec = m.restrictions.add()
        spec.restriction_id = text(r["restriction_id"], f"{p}.restriction_id")
        restriction_rule(pb, r["rule"], spec.rule, f"{p}.rule")
        if "account" in r:
            spec.account = text(r["account"], f"{p}.account")
        spec.effective = instant_micros(r["effective"], f"{p}.effective")


def restriction_edited(pb, j, m, path):
    fields(j, path, ["household", "restriction_id", "op", "effective"], ["rule", "account"])
    m.household = text(j["household"], f"{path}.household")
    m.restriction_id = text(j["restriction_id"], f"{path}.restriction_id")
    m.op = enum(pb.EditOp, "EDIT_OP", j["op"], f"{path}.op")
    if "rule" in j:
        restriction_rule(pb, j["rule"], m.rule, f"{path}.rule")
    if "account" in j:
        m.account = text(j["account"], f"{path}.account")
    m.effective = instant_micros(j["effective"], f"{path}.effective")


def cash_flow(pb, j, m, path):
    fields(j, path, ["household", "account", "kind", "amount"])
    m.household = text(j["household"], f"{path}.household")
    m.account = text(j["account"], f"{path}.account")
    m.kind = enum(pb.CashFlowKind, "CASH_FLOW_KIND", j["kind"], f"{path}.kind")
    m.amount = decimal(j["amount"], f"{path}.amount")


def fill(pb, j, m, path):
    required = ["household", "account", "security", "side", "status", "quantity", "price", "trade_date"]
    fields(j, path, required, ["order_id", "reason", "lots"])
    for f in ["household", "account", "security"]:
        setattr(m, f, text(j[f], f"{path}.{f}"))
    if "order_id" in j:
        m.order_id = text(j["order_id"], f"{path}.order_id")
    m.side = enum(pb.Side, "SIDE", j["side"], f"{path}.side")
    m.status = enum(pb.FillStatus, "FILL_STATUS", j["status"], f"{path}.status")
    m.quantity = decimal(j["quantity"], f"{path}.quantity")
    m.price = decimal(j["price"], f"{path}.price")
    m.trade_date = date(j["trade_date"], f"{path}.trade_date")
    if "reason" in j:
        m.reason = text(j["reason"], f"{path}.reason")
    for i, lot in enumerate(j.get("lots", [])):
        p = f"{path}.lots[{i}]"
        fields(lot, p, ["lot_id", "quantity"])
        m.lots.add(lot_id=unsigned(lot["lot_id"], f"{p}.lot_id"), quantity=decimal(lot["quantity"], f"{p}.quantity"))


def tax_objective_set(pb, j, m, path):
    fields(j, path, ["household", "objective"])
    m.household = text(j["household"], f"{path}.household")
    o, p = j["objective"], f"{path}.objective"
    kind = text(fields(o, p, ["kind"], ["target_usd", "tolerance_usd"])["kind"], f"{p}.kind")
    need = {"harvest_losses": [], "realize_gains": ["target_usd"], "tax_neutral": ["tolerance_usd"]}
    if kind not in need:
        raise BadEvent(f"{p}.kind: unknown value {kind!r}")
    fields(o, p, ["kind", *need[kind]])
    sub = getattr(m.objective, kind)
    sub.SetInParent()
    for f in need[kind]:
        setattr(sub, f, decimal(o[f], f"{p}.{f}"))


def withdrawal_scheduled(pb, j, m, path):
    required = ["household", "account", "schedule_id", "amount", "frequency", "first_payment"]
    fields(j, path, required, ["lead_days", "until", "yield_tilt"])
    for f in ["household", "account", "schedule_id"]:
        setattr(m, f, text(j[f], f"{path}.{f}"))
    m.amount = decimal(j["amount"], f"{path}.amount")
    m.frequency = enum(pb.Frequency, "FREQUENCY", j["frequency"], f"{path}.frequency")
    m.first_payment = date(j["first_payment"], f"{path}.first_payment")
    if "lead_days" in j:
        m.lead_days = unsigned(j["lead_days"], f"{path}.lead_days")
    if j.get("until") is not None:
        m.until = date(j["until"], f"{path}.until")
    if j.get("yield_tilt") is not None:
        m.yield_tilt = decimal(j["yield_tilt"], f"{path}.yield_tilt")


def transition_set(pb, j, m, path):
    fields(j, path, ["household", "plan"])
    m.household = text(j["household"], f"{path}.household")
    plan, p = j["plan"], f"{path}.plan"
    fields(plan, p, ["period", "periods"], ["budget_usd", "yearly_budget_usd", "keep", "complete_below"])
    m.plan.period = enum(pb.Frequency, "FREQUENCY", plan["period"], f"{p}.period")
    m.plan.periods = unsigned(plan["periods"], f"{p}.periods")
    for f in ["budget_usd", "yearly_budget_usd", "complete_below"]:
        if plan.get(f) is not None:
            setattr(m.plan, f, decimal(plan[f], f"{p}.{f}"))
    m.plan.keep.extend(text(s, f"{p}.keep[{i}]") for i, s in enumerate(plan.get("keep", [])))


# payload type -> (converter, the payload field naming the record key, or a
# fixed key; household events are keyed by household, reference data by subject)
PAYLOADS = {
    "security_upserted": (security_upserted, REFERENCE, "security"),
    "model_published": (model_published, REFERENCE, "model"),
    "price_tick": (price_tick, REFERENCE, "security"),
    "esg_score_changed": (esg_score_changed, REFERENCE, "security"),
    "corporate_action": (corporate_action, REFERENCE, "security"),
    "clock": (clock, REFERENCE, None),
    "household_upserted": (household_upserted, HOUSEHOLDS, "household"),
    "restriction_edited": (restriction_edited, HOUSEHOLDS, "household"),
    "cash_flow": (cash_flow, HOUSEHOLDS, "household"),
    "fill": (fill, HOUSEHOLDS, "household"),
    "tax_objective_set": (tax_objective_set, HOUSEHOLDS, "household"),
    "withdrawal_scheduled": (withdrawal_scheduled, HOUSEHOLDS, "household"),
    "transition_set": (transition_set, HOUSEHOLDS, "household"),
}
CLOCK_KEY = "clock"


def envelope(pb, j, path):
    """One JSON event -> (Envelope, topic, key, event type)."""
    fields(j, path, ["event_id", "producer", "event_time", "schema_version", "payload"])
    env = pb.Envelope()
    env.event_id = text(j["event_id"], f"{path}.event_id")
    env.producer = text(j["producer"], f"{path}.producer")
    env.event_time = instant_micros(j["event_time"], f"{path}.event_time")
    env.schema_version = unsigned(j["schema_version"], f"{path}.schema_version")
    payload = j["payload"]
    if not isinstance(payload, dict) or "type" not in payload:
        raise BadEvent(f"{path}.payload is not an object with a type")
    kind = payload["type"]
    if kind not in PAYLOADS:
        raise BadEvent(f"{path}.payload.type: unknown value {kind!r}")
    convert, topic, key_field = PAYLOADS[kind]
    body = {k: v for k, v in payload.items() if k != "type"}
    convert(pb, body, getattr(env, kind), f"{path}.payload")
    assert env.WhichOneof("payload") == kind, (env.WhichOneof("payload"), kind)
    key = CLOCK_KEY if key_field is None else body[key_field]
    return env, topic, key, kind


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def read_events(path):
    """The JSON events of an NDJSON file (blank lines skipped), all decoded before anything is sent."""
    events = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    events.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    sys.exit(f"kafka_client: {path}:{n}: not JSON: {e}")
            if len(events) > EVENTS_MAX:
                sys.exit(f"kafka_client: {path} has more than {EVENTS_MAX} events")
    return events


def records_of(pb, file):
    """(event id, Envelope, topic, key, headers) for every event of the file, or exit naming the bad field."""
    records = []
    for where, j in read_events(file):
        try:
            env, topic, key, kind = envelope(pb, j, where)
        except BadEvent as e:
            sys.exit(f"kafka_client: {e}")
        headers = [
            (HEADER_SCHEMA_VERSION, str(env.schema_version)),
            (HEADER_EVENT_TYPE, kind),
            (HEADER_CONTENT_TYPE, CONTENT_TYPE_PROTOBUF),
        ]
        records.append((env.event_id, env, topic, key, headers))
    return records


def encode(args, pb):
    """The records `publish` would produce, without a broker (for checking the conversion)."""
    for event_id, env, topic, key, headers in records_of(pb, args.file):
        record = {"event_id": event_id, "topic": topic, "key": key, "headers": dict(headers)}
        record.update(timestamp_ms=env.event_time // 1000, value_hex=env.SerializeToString().hex())
        print(json.dumps(record, sort_keys=True))


def publish(args, pb):
    records = records_of(pb, args.file)
    producer = Producer(
        {
            "bootstrap.servers": args.brokers,
            "client.id": "overlay-python-client",
            # No duplicates or reordering from retries; the broker has every record when flush returns.
            "enable.idempotence": True,
            "acks": "all",
            # murmur2 of the key, as `overlay publish --kafka` and the Java
            # client use (librdkafka's default is CRC32), so one household's
            # events share one partition whichever producer sent them.
            "partitioner": "murmur2_random",
        }
    )
    delivered, failed = {}, []  # delivered: by position in the file

    def on_delivery(err, msg, i, event_id):
        if err is not None:
            failed.append(f"{event_id}: {err}")
        else:
            delivered[i] = {
                "event_id": event_id,
                "topic": msg.topic(),
                "key": msg.key().decode(),
                "partition": msg.partition(),
                "offset": msg.offset(),
            }

    deadline = time.monotonic() + args.timeout
    for i, (event_id, env, topic, key, headers) in enumerate(records):
        while True:
            try:
                producer.produce(
                    topic,
                    key=key.encode(),
                    value=env.SerializeToString(),
                    headers=[(k, v.encode()) for k, v in headers],
                    # The record time is the event time, in milliseconds (floor).
                    timestamp=env.event_time // 1000,
                    on_delivery=lambda err, msg, i=i, event_id=event_id: on_delivery(err, msg, i, event_id),
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                if time.monotonic() > deadline:
                    sys.exit("kafka_client: timed out producing (the local queue stayed full)")
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(max(0.0, deadline - time.monotonic()))
    if left or failed:
        sys.exit(f"kafka_client: {left} records undelivered, {len(failed)} failed: {failed[:5]}")
    assert sorted(delivered) == list(range(len(records))), (len(delivered), len(records))
    by_topic = {}
    for i in range(len(records)):
        d = delivered[i]
        print(json.dumps(d))
        by_topic[d["topic"]] = by_topic.get(d["topic"], 0) + 1
    print(f"kafka_client: published {len(delivered)} events {json.dumps(by_topic, sort_keys=True)}", file=sys.stderr)


def value_json(pb, headers, value):
    content_type = headers.get(HEADER_CONTENT_TYPE)
    if content_type == "application/json":
        return {"value": json.loads(value)}
    if content_type == CONTENT_TYPE_PROTOBUF:
        env = pb.Envelope.FromString(value)
        return {"value": json_format.MessageToDict(env, preserving_proto_field_name=True), "value_hex": value.hex()}
    return {"value_hex": (value or b"").hex()}


def read(args, pb):
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "client.id": "overlay-python-client",
            # Assigned partitions only; the group id is required but nothing is committed.
            "group.id": "overlay-python-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            # A partition is read when the fetch reports its end (partition EOF),
            # not by listed end offsets (tansu 0.6.0 lists the last batch's start).
            "enable.partition.eof": True,
        }
    )
    try:
        meta = consumer.list_topics(args.topic, timeout=args.timeout).topics.get(args.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            sys.exit(f"kafka_client: topic {args.topic} does not exist ({meta.error if meta else 'no metadata'})")
        partitions = sorted(meta.partitions)
        consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end = {p: False for p in partitions}
        out = []
        deadline = time.monotonic() + args.timeout
        while not all(at_end.values()):
            if time.monotonic() > deadline:
                sys.exit(f"kafka_client: timed out reading {args.topic} (at end: {at_end})")
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end[msg.partition()] = True
                    continue
                raise KafkaException(msg.error())
            at_end[msg.partition()] = False
            headers = {k: v.decode() for k, v in (msg.headers() or [])}
            record = {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": msg.key().decode() if msg.key() is not None else None,
                "headers": headers,
            }
            record.update(value_json(pb, headers, msg.value()))
            out.append(record)
            if len(out) > READ_RECORDS_MAX:
                sys.exit(f"kafka_client: {args.topic} has more than {READ_RECORDS_MAX} records")
    finally:
        consumer.close()
    out.sort(key=lambda r: (r["partition"], r["offset"]))
    for r in out:
        print(json.dumps(r, sort_keys=True))
    print(f"kafka_client: read {len(out)} records from {args.topic}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proto-dir", type=Path, default=PROTO_DIR_DEFAULT, help="the directory holding overlay/v1/*.proto")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S_DEFAULT, help="seconds a command may take")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="publish JSON events (NDJSON) as protobuf Envelopes")
    p.add_argument("--brokers", required=True)
    p.add_argument("file")
    r = sub.add_parser("read", help="print every committed record of a topic as JSON lines")
    r.add_argument("--brokers", required=True)
    r.add_argument("topic")
    e = sub.add_parser("encode", help="print the records publish would produce, without a broker")
    e.add_argument("file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overlay-pb2-") as out_dir:
        pb = load_events_pb2(args.proto_dir.resolve(), out_dir)
        {"publish": publish, "read": read, "encode": encode}[args.command](args, pb)


if __name__ == "__main__":
    main()
