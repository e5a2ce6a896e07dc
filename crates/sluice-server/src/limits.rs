//! Output limits: a tool result too large for a model's context is cut with
//! an explicit marker, never into invalid JSON.
//!
//! Small results (under every limit by their raw size) are returned as they
//! are, without being parsed.

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// Bytes per estimated token (the usual rough estimate for English text and JSON).
pub(crate) const BYTES_PER_TOKEN: usize = 4;

/// Limits for one call.
pub(crate) struct Limits {
    pub max_tokens: usize,
    pub max_binary: usize,
}

/// Applies `limits` to a `tools/call` result. Returns the result unchanged
/// when it fits.
pub(crate) fn apply(result: Box<RawValue>, limits: &Limits) -> Box<RawValue> {
    cut(result, limits).0
}

/// [`apply`], also telling whether anything was cut.
pub(crate) fn cut(result: Box<RawValue>, limits: &Limits) -> (Box<RawValue>, bool) {
    let max_text = limits.max_tokens.saturating_mul(BYTES_PER_TOKEN);
    if result.get().len() <= max_text.min(limits.max_binary) {
        return (result, false);
    }
    let Ok(mut r) = serde_json::from_str::<Map<String, Value>>(result.get()) else {
        return (result, false);
    };
    let mut notes: Vec<String> = Vec::new();
    let mut changed = false;

    if let Some(Value::Array(items)) = r.get_mut("content") {
        // Binary items over the byte limit are replaced by a note.
        for item in items.iter_mut() {
            if let Some(note) = oversized_binary(item, limits.max_binary) {
                *item = json!({"type": "text", "text": note});
                changed = true;
            }
        }
        // Text items share the token budget, in order.
        let total: usize = items.iter().filter_map(text_of).map(str::len).sum();
        if total > max_text {
            let mut budget = max_text;
            let mut last_kept = None;
            for (i, item) in items.iter_mut().enumerate() {
                let Some(text) = item
                    .get_mut("text")
                    .and_then(|t| t.as_str().map(str::to_string))
                else {
                    continue;
                };
                if item.get("type").and_then(Value::as_str) != Some("text") {
                    continue;
                }
                let keep = floor_char_boundary(&text, budget.min(text.len()));
                budget -= keep;
                item["text"] = Value::String(text[..keep].to_string());
                if keep > 0 || last_kept.is_none() {
                    last_kept = Some(i);
                }
            }
            let marker = format!(
                "\n\n[sluice: output truncated: {} of {} characters shown (about {} of {} tokens; this tool's limit is {} tokens). Ask the tool for less, e.g. a narrower query, fewer results or a smaller page.]",
                max_text,
                total,
                max_text / BYTES_PER_TOKEN,
                total / BYTES_PER_TOKEN,
                limits.max_tokens
            );
            if let Some(i) = last_kept
                && let Some(Value::String(t)) = items[i].get_mut("text")
            {
                t.push_str(&marker);
            }
            items.retain(|it| {
                !(it.get("type").and_then(Value::as_str) == Some("text") && it["text"] == "")
            });
            notes.push(format!("text cut from {total} to {max_text} characters"));
            changed = true;
        }
    }

    // Structured content cannot be cut without breaking it: it is removed and explained.
    let structured_len = r.get("structuredContent").map(|v| v.to_string().len());
    if let Some(len) = structured_len
        && len > max_text
    {
        r.remove("structuredContent");
        let note = format!(
            "[sluice: the structured result ({len} bytes, about {} tokens) was removed: it exceeds this tool's limit of {} tokens and cannot be shortened without breaking it. Ask the tool for less.]",
            len / BYTES_PER_TOKEN,
            limits.max_tokens
        );
        match r.get_mut("content") {
            Some(Value::Array(items)) => items.push(json!({"type": "text", "text": note})),
            _ => {
                r.insert("content".into(), json!([{"type": "text", "text": note}]));
            }
        }
        // Clients validate structuredContent against the tool's outputSchema
        // unless the result is an error; without it, this result is one.
        r.insert("isError".into(), Value::Bool(true));
        notes.push(format!("structuredContent of {len} bytes removed"));
        changed = true;
    }

    if !changed {
        return (result, false);
    }
    let meta = r.entry("_meta").or_insert_with(|| json!({}));
    if let Value::Object(m) = meta {
        m.insert("sluice/truncated".into(), json!({"notes": notes}));
    }
    match RawValue::from_string(Value::Object(r).to_string()) {
        Ok(cut) => (cut, true),
        Err(_) => (result, false),
    }
}

fn text_of(item: &Value) -> Option<&str> {
    (item.get("type")?.as_str()? == "text")
        .then(|| item.get("text")?.as_str())
        .flatten()
}

fn oversized_binary(item: &Value, max: usize) -> Option<String> {
    let kind = item.get("type")?.as_str()?;
    let (len, mime) = match kind {
        "image" | "audio" => (item.get("data")?.as_str()?.len(), item.get("mimeType")),
        "resource" => {
            let res = item.get("resource")?;
            let body = res.get("blob").or_else(|| res.get("text"))?.as_str()?;
            (body.len(), res.get("mimeType"))
        }
        _ => return None,
    };
    (len > max).then(|| {
        let mime = mime.and_then(Value::as_str).unwrap_or("unknown type");
        format!(
            "[sluice: a {kind} item ({mime}, {len} bytes) was removed: it exceeds this tool's limit of {max} bytes. Ask the tool for a smaller one.]"
        )
    })
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: Value, max_tokens: usize, max_binary: usize) -> Value {
        let raw = RawValue::from_string(v.to_string()).unwrap();
        let out = apply(
            raw,
            &Limits {
                max_tokens,
                max_binary,
            },
        );
        serde_json::from_str(out.get()).unwrap()
    }

    #[test]
    fn small_results_are_untouched() {
        let v = json!({"content": [{"type": "text", "text": "hi"}], "x-extra": 1});
        assert_eq!(run(v.clone(), 10, 100), v);
    }

    #[test]
    fn long_text_is_cut_with_a_marker_and_stays_valid() {
        let v = json!({"content": [{"type": "text", "text": "é".repeat(500)}]});
        let out = run(v, 50, 1 << 20);
        let text = out["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("[sluice: output truncated"), "{text}");
        assert!(text.len() < 200 + 300);
        assert!(out["_meta"]["sluice/truncated"].is_object());
    }

    #[test]
    fn structured_content_is_removed_not_cut() {
        let v = json!({
            "content": [{"type": "text", "text": "summary"}],
            "structuredContent": {"rows": ["x".repeat(1000)]}
        });
        let out = run(v, 100, 1 << 20);
        assert!(out.get("structuredContent").is_none());
        assert_eq!(out["isError"], true);
        assert_eq!(out["content"][0]["text"], "summary");
        assert!(
            out["content"][1]["text"]
                .as_str()
                .unwrap()
                .contains("structured result")
        );
    }

    #[test]
    fn oversized_images_are_replaced_by_a_note() {
        let v = json!({"content": [
            {"type": "text", "text": "pic:"},
            {"type": "image", "mimeType": "image/png", "data": "QUJD".repeat(100)}
        ]});
        let out = run(v, 10_000, 100);
        assert_eq!(out["content"][1]["type"], "text");
        assert!(
            out["content"][1]["text"]
                .as_str()
                .unwrap()
                .contains("image/png")
        );
    }
}
