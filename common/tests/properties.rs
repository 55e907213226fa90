//! Properties of signal parsing over generated input: it never panics, whatever it
//! accepts survives its wire form unchanged, and the queue's decode never panics on
//! any bytes, signed or not.

use chrono::Utc;
use hoox_common::message::QueueMessage;
use hoox_common::signal::{Signal, WebhookSignal, KNOWN_FIELDS};
use hoox_common::signing::hmac_sha256_hex;
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Map, Value};
use uuid::Uuid;

const KEY: &str = "property-key";

/// Every field a webhook may carry, and a few it may not.
fn fields() -> Vec<&'static str> {
    KNOWN_FIELDS.into_iter().chain(["levrage", ""]).collect()
}

/// Text shaped like a number, in and out of the accepted notation.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,16})(\\.[0-9]{1,18})?",
        "[-+]?[0-9_.eExX]{0,24}",
        "-?[0-9]{1,3}(\\.[0-9]{1,3})?[eE][-+]?[0-9]{1,3}",
        any::<String>(),
    ]
}

/// Any JSON value a field might hold: numbers from their text, strings both numeric
/// and arbitrary, the other scalars, and small containers.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number_text().prop_filter_map("a JSON number", |text| {
            serde_json::from_str::<Value>(&text)
                .ok()
                .filter(Value::is_number)
        }),
        number_text().prop_map(Value::String),
        prop_oneof![
            Just("LONG"),
            Just("sell"),
            Just("CLOSE_SHORT"),
            Just("BYBIT:BTCUSDT.P"),
            Just("limit"),
            Just("bybit"),
            Just("true"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A webhook object: usually the required fields with plausible values, plus any
/// number of known and unknown fields with any values.
fn webhook() -> impl Strategy<Value = Map<String, Value>> {
    let required = (
        prop_oneof![Just("LONG"), Just("buy"), Just("CLOSE_LONG"), Just("short")],
        prop_oneof![
            Just("BTCUSDT"),
            Just("BYBIT:ETHUSDT.P"),
            Just("1000PEPEUSDT")
        ],
        number_text(),
    );
    let extra = prop::collection::vec((prop::sample::select(fields()), value()), 0..6);
    (required, extra, any::<bool>()).prop_map(|((action, symbol, quantity), extra, base)| {
        let mut object = Map::new();
        if base {
            object.insert("action".into(), Value::String(action.into()));
            object.insert("symbol".into(), Value::String(symbol.into()));
            object.insert("quantity".into(), Value::String(quantity));
        }
        for (field, value) in extra {
            object.insert(field.to_owned(), value);
        }
        object
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn parsing_never_panics_and_what_it_accepts_round_trips(object in webhook()) {
        if let Ok(parsed) = WebhookSignal::from_json(&object) {
            let wire = serde_json::to_string(&parsed.signal).unwrap();
            let back: Signal = serde_json::from_str(&wire).unwrap();
            prop_assert_eq!(&back, &parsed.signal);

            let key = SecretString::from(KEY.to_owned());
            let message = QueueMessage::new(Uuid::new_v4(), Utc::now(), parsed.signal);
            let (body, signature) = message.encode(&key);
            let decoded = QueueMessage::decode(&body, Some(&signature), &key).unwrap();
            prop_assert_eq!(decoded, message);
        }
    }

    #[test]
    fn any_string_as_a_number_never_panics(text in any::<String>(), field in prop::sample::select(&["quantity", "price", "leverage", "stopLoss", "takeProfit"][..])) {
        let mut object = Map::new();
        object.insert("action".into(), Value::String("LONG".into()));
        object.insert("symbol".into(), Value::String("BTCUSDT".into()));
        object.insert("quantity".into(), Value::String("1".into()));
        object.insert(field.to_owned(), Value::String(text));
        let _ = WebhookSignal::from_json(&object);
    }

    #[test]
    fn decoding_any_signed_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let key = SecretString::from(KEY.to_owned());
        let signature = hmac_sha256_hex(KEY.as_bytes(), &body);
        let _ = QueueMessage::decode(&body, Some(&signature), &key);
        let _ = QueueMessage::decode(&body, Some("00"), &key);
        let _ = QueueMessage::decode(&body, None, &key);
    }

    #[test]
    fn decoding_mutated_messages_never_panics(quantity in number_text(), price in number_text(), leverage in number_text()) {
        let body = format!(
            r#"{{"version":1,"requestId":"{}","receivedAt":"2026-01-01T00:00:00Z","signal":{{"action":"LONG","symbol":"BTCUSDT","quantity":"{quantity}","price":"{price}","leverage":{leverage}}}}}"#,
            Uuid::new_v4()
        );
        let key = SecretString::from(KEY.to_owned());
        let signature = hmac_sha256_hex(KEY.as_bytes(), body.as_bytes());
        if let Ok(message) = QueueMessage::decode(body.as_bytes(), Some(&signature), &key) {
            prop_assert!(message.signal.quantity.get() > rust_decimal::Decimal::ZERO);
        }
    }
}
