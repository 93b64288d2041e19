//! Generated event traffic that more than one bench sends.

use serde_json::{Value, json};

/// `n` realistic ~1 KB identify events (a third each on the free, pro and enterprise plans).
pub fn identify_events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "type": "identify", "messageId": format!("msg-{i:06}"), "userId": format!("user_{i}"),
                "anonymousId": format!("anon-{:08x}", i * 7919),
                "timestamp": "2026-11-30T06:13:48.000Z", "sentAt": "2026-11-30T06:13:48.120Z",
                "traits": {
                    "email": format!("person{i}@example{}.com", i % 97), "name": format!("Person {i}"),
                    "first_name": "Person", "last_name": format!("{i}"), "title": if i % 3 == 0 { "CTO" } else { "Engineer" },
                    "phone": format!("+1 555 {:04}", i % 10_000), "website": format!("https://p{i}.example.com"),
                    "plan": (["free", "pro", "enterprise"][i % 3]), "logins": i % 40,
                    "company": {"id": format!("c_{}", i % 500), "name": format!("Company {}", i % 500), "industry": "Software", "employee_count": 50 + i % 900},
                    "address": {"city": "London", "country": "GB", "postal_code": "N1 9GU", "street": "1 Example Street"}
                },
                "context": {"ip": "203.0.113.7", "locale": "en-GB", "library": {"name": "analytics-node", "version": "6.2.0"},
                            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"},
                "integrations": {"All": true}
            })
        })
        .collect()
}
