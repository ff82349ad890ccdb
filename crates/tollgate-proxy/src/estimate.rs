//! The worst case a request can cost, in tokens: what admission reserves before the call.
//!
//! Invariant: for every provider the gateway speaks to, the tokens it bills for a request
//! are at most [`WorstCase::prompt`] prompt tokens and [`WorstCase::choices`] × the output
//! cap completion tokens. How each part is bounded:
//! - Text (messages, prompts, inputs, tool and `response_format` schemas, everything else
//!   in the body): one token per UTF-8 byte of the JSON body. Every tokenizer these
//!   providers use (byte-level BPE, SentencePiece with byte fallback) makes no token of
//!   less than one byte, and the JSON around the text (quotes, keys, braces) outweighs the
//!   few tokens a chat template adds per message; [`OVERHEAD`] covers the rest (the reply
//!   priming, the tool namespace wrapper). No tokenizer is loaded: o200k costs ~45 MB
//!   resident and ~170 ms to load (see the README).
//! - Images: their payload is not counted as text; each image costs what its provider's
//!   rule says at the requested `detail` (OpenAI's tiles or patches, Anthropic's pixel
//!   area), for the image's size when the body carries a PNG, else that detail's maximum.
//!   A model whose family is not known gets the largest rule of all (gpt-4o-mini's, which
//!   counts image tokens at 33⅓× gpt-4o's).
//! - Audio (`input_audio`): one token per 8 base64 characters, far above what any codec's
//!   lowest bit rate gives at ~10 tokens a second.
//! - Choices: `n` and `best_of` (every generated choice is billed), times the number of
//!   prompts of a legacy completion.

use base64::Engine as _;
use serde_json::Value;
use tollgate_core::model::Endpoint;

/// Tokens added to every prompt bound: reply priming and tool wrappers.
pub(crate) const OVERHEAD: u64 = 64;
/// Base64 characters per audio token (see the module doc).
const AUDIO_B64_PER_TOKEN: u64 = 8;

/// The most a request can be billed, in tokens and choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorstCase {
    /// Prompt tokens, images and audio included.
    pub prompt: u64,
    /// Completions generated: each may use the whole output cap.
    pub choices: u64,
}

/// How a model family counts image tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ImageRule {
    /// OpenAI's tiles: `base` + `tile` per 512 px tile after scaling into 2048² and the
    /// short side to 768; `detail: low` is `base` alone.
    Tiles { base: u64, tile: u64 },
    /// OpenAI's 32 px patches, at most 1536, times a multiplier (in thousandths).
    Patches { multiplier_milli: u64 },
    /// Anthropic: width × height / 750 after scaling within 1568 px and 1.15 MP.
    Anthropic,
    /// A family this module does not know: the largest of the rules above.
    Unknown,
}

const KNOWN: [ImageRule; 6] = [
    ImageRule::Tiles { base: 85, tile: 170 },
    ImageRule::Tiles { base: 2833, tile: 5667 },
    ImageRule::Tiles { base: 75, tile: 150 },
    ImageRule::Patches { multiplier_milli: 1620 },
    ImageRule::Patches { multiplier_milli: 2460 },
    ImageRule::Anthropic,
];

impl ImageRule {
    /// The rule of a model by its name (the public id or a channel's upstream name).
    pub fn for_model(name: &str) -> Self {
        let n = name.to_ascii_lowercase();
        let has = |s: &str| n.contains(s);
        if has("claude") {
            Self::Anthropic
        } else if has("4o-mini") {
            Self::Tiles { base: 2833, tile: 5667 }
        } else if has("4.1-nano") || has("gpt-5-nano") {
            Self::Patches { multiplier_milli: 2460 }
        } else if has("4.1-mini") || has("gpt-5-mini") {
            Self::Patches { multiplier_milli: 1620 }
        } else if has("o4-mini") {
            Self::Patches { multiplier_milli: 1720 }
        } else if has("gpt-4o") || has("gpt-4.1") || has("gpt-4-turbo") || has("gpt-4.5") {
            Self::Tiles { base: 85, tile: 170 }
        } else if has("gpt-5") {
            Self::Tiles { base: 70, tile: 140 }
        } else if n.starts_with("o1") || n.starts_with("o3") {
            Self::Tiles { base: 75, tile: 150 }
        } else {
            Self::Unknown
        }
    }

    /// Tokens of one image of `size` (unknown: the detail's maximum); `low` for `detail: low`.
    pub fn tokens(self, size: Option<(u64, u64)>, low: bool) -> u64 {
        match self {
            Self::Tiles { base, tile } => {
                if low {
                    return base;
                }
                let tiles = size.map_or(8, |(w, h)| {
                    let (w, h) = fit(w, h, 2048, 2048);
                    let (w, h) = short_side(w, h, 768);
                    w.div_ceil(512) * h.div_ceil(512)
                });
                base + tile * tiles
            }
            Self::Patches { multiplier_milli } => {
                let patches = size.map_or(1536, |(w, h)| patches(w, h).min(1536));
                (patches * multiplier_milli).div_ceil(1000)
            }
            Self::Anthropic => size.map_or(1600, |(w, h)| {
                let (w, h) = fit(w, h, 1568, 1568);
                (w * h).div_ceil(750).min(1600)
            }),
            Self::Unknown => KNOWN.iter().map(|r| r.tokens(size, low)).max().unwrap_or(0),
        }
    }
}

/// Scales down (never up) to fit `max_w` × `max_h`, keeping the aspect ratio.
fn fit(w: u64, h: u64, max_w: u64, max_h: u64) -> (u64, u64) {
    if w <= max_w && h <= max_h {
        return (w, h);
    }
    // Rounded up: a bound may only err upwards.
    if w * max_h >= h * max_w {
        (max_w, (h * max_w).div_ceil(w.max(1)))
    } else {
        ((w * max_h).div_ceil(h.max(1)), max_h)
    }
}

/// Scales down so that the short side is at most `side`.
fn short_side(w: u64, h: u64, side: u64) -> (u64, u64) {
    let short = w.min(h);
    if short <= side {
        return (w, h);
    }
    ((w * side).div_ceil(short), (h * side).div_ceil(short))
}

fn patches(w: u64, h: u64) -> u64 {
    w.div_ceil(32) * h.div_ceil(32)
}

/// The worst case of a request body at `endpoint`, images counted by the largest of
/// `rules` (one per model a channel may serve it as).
pub(crate) fn worst_case(endpoint: Endpoint, body: &[u8], rules: &[ImageRule]) -> WorstCase {
    let bytes = body.len() as u64;
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return WorstCase { prompt: bytes.saturating_add(OVERHEAD), choices: 1 };
    };
    let mut media = Media { rules, payload_bytes: 0, tokens: 0 };
    media.walk(&value);
    let prompt = bytes.saturating_sub(media.payload_bytes).saturating_add(media.tokens).saturating_add(OVERHEAD);
    let count = |k: &str| value.get(k).and_then(Value::as_u64).unwrap_or(1).max(1);
    let mut choices = count("n").max(count("best_of"));
    if endpoint == Endpoint::Completions
        && let Some(Value::Array(prompts)) = value.get("prompt")
        && !prompts.iter().all(Value::is_number)
    {
        choices = choices.saturating_mul(prompts.len().max(1) as u64);
    }
    WorstCase { prompt, choices }
}

/// Images and audio found in a body: their payload bytes (not text) and their tokens.
struct Media<'r> {
    rules: &'r [ImageRule],
    payload_bytes: u64,
    tokens: u64,
}

impl Media<'_> {
    fn walk(&mut self, v: &Value) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| self.walk(i)),
            Value::Object(map) => {
                if let Some(image) = map.get("image_url") {
                    // Chat `{"image_url": {"url", "detail"}}`, Responses `{"image_url": "…", "detail"}`.
                    let url = image.get("url").or(Some(image)).and_then(Value::as_str).unwrap_or("");
                    let detail = image.get("detail").or_else(|| map.get("detail")).and_then(Value::as_str);
                    self.image(url, url.len(), detail);
                } else if map.get("type").and_then(Value::as_str) == Some("image")
                    && let Some(source) = map.get("source")
                {
                    // Anthropic's `{"type":"image","source":{"type":"base64","data"}}`.
                    let data = source.get("data").and_then(Value::as_str).unwrap_or("");
                    self.image_data(data, data.len(), None);
                } else if let Some(audio) = map.get("input_audio") {
                    let data = audio.get("data").and_then(Value::as_str).unwrap_or("");
                    self.payload_bytes += data.len() as u64;
                    self.tokens = self.tokens.saturating_add((data.len() as u64).div_ceil(AUDIO_B64_PER_TOKEN));
                } else {
                    map.values().for_each(|i| self.walk(i));
                }
            }
            _ => {}
        }
    }

    fn image(&mut self, url: &str, len: usize, detail: Option<&str>) {
        let data = url.strip_prefix("data:").and_then(|d| d.split_once(";base64,")).map_or("", |(_, b64)| b64);
        self.image_data(data, len, detail);
    }

    fn image_data(&mut self, b64: &str, len: usize, detail: Option<&str>) {
        let size = png_size(b64);
        let low = detail == Some("low");
        let worst = self
            .rules
            .iter()
            .map(|r| r.tokens(size, low))
            .max()
            .unwrap_or_else(|| ImageRule::Unknown.tokens(size, low));
        self.payload_bytes += len as u64;
        self.tokens = self.tokens.saturating_add(worst);
    }
}

/// Width and height of a base64 PNG, read from its header.
pub(crate) fn png_size(b64: &str) -> Option<(u64, u64)> {
    // 32 base64 characters are 24 bytes: the signature and the IHDR's width and height.
    let head = base64::engine::general_purpose::STANDARD.decode(b64.get(..32)?).ok()?;
    if head.get(..8)? != b"\x89PNG\r\n\x1a\n" || head.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(head.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(head.get(20..24)?.try_into().ok()?);
    (w > 0 && h > 0).then_some((u64::from(w), u64::from(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base64 PNG header of `w` × `h` (enough for `png_size`).
    pub(crate) fn png_b64(w: u32, h: u32) -> String {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0]);
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn chat(body: serde_json::Value, rule: ImageRule) -> WorstCase {
        worst_case(Endpoint::ChatCompletions, body.to_string().as_bytes(), &[rule])
    }

    #[test]
    fn openai_tile_formula_matches_the_documented_examples() {
        let gpt4o = ImageRule::for_model("gpt-4o-2024-08-06");
        // OpenAI's examples: 1024² high = 765; 2048×4096 high = 1105; any low = 85.
        assert_eq!(gpt4o.tokens(Some((1024, 1024)), false), 765);
        assert_eq!(gpt4o.tokens(Some((2048, 4096)), false), 1105);
        assert_eq!(gpt4o.tokens(Some((4096, 8192)), true), 85);
        assert_eq!(gpt4o.tokens(None, false), 85 + 8 * 170, "unknown size: eight tiles at most");
        // gpt-4o-mini counts the same image at 2833 + 5667 per tile.
        let mini = ImageRule::for_model("fake-4o-mini");
        assert_eq!(mini.tokens(Some((1024, 1024)), false), 2833 + 4 * 5667);
        assert_eq!(mini.tokens(None, true), 2833);
        // Patches: 1024×1024 = 1024 patches × 1.62 (gpt-4.1-mini).
        assert_eq!(ImageRule::for_model("gpt-4.1-mini").tokens(Some((1024, 1024)), false), 1659);
        assert_eq!(ImageRule::for_model("gpt-4.1-nano").tokens(None, false), 3779);
        assert_eq!(ImageRule::for_model("claude-sonnet-4").tokens(Some((1000, 1000)), false), 1334);
        assert_eq!(ImageRule::for_model("claude-sonnet-4").tokens(Some((4000, 3000)), false), 1600);
    }

    #[test]
    fn an_unknown_family_gets_the_largest_rule() {
        let unknown = ImageRule::for_model("my-vision-model");
        assert_eq!(unknown, ImageRule::Unknown);
        assert_eq!(unknown.tokens(None, false), 2833 + 8 * 5667);
        for size in [None, Some((100, 100)), Some((1024, 1024)), Some((3000, 500))] {
            for low in [false, true] {
                let worst = unknown.tokens(size, low);
                assert!(KNOWN.iter().all(|r| r.tokens(size, low) <= worst), "{size:?} {low}");
            }
        }
    }

    #[test]
    fn text_is_bounded_by_its_bytes_and_every_choice_counts() {
        let body = json!({"model":"m","n":8,"max_tokens":20,"messages":[{"role":"user","content":"日本語のテキスト"}]});
        let len = body.to_string().len() as u64;
        let w = chat(body, ImageRule::Unknown);
        assert_eq!(w, WorstCase { prompt: len + OVERHEAD, choices: 8 });
        let w = chat(json!({"model":"m","n":2,"best_of":5,"messages":[]}), ImageRule::Unknown);
        assert_eq!(w.choices, 5, "best_of completions are generated and billed");
        let legacy = json!({"model":"m","n":3,"prompt":["a","b"]}).to_string();
        assert_eq!(worst_case(Endpoint::Completions, legacy.as_bytes(), &[]).choices, 6);
        let tokens = json!({"model":"m","prompt":[1,2,3]}).to_string();
        assert_eq!(worst_case(Endpoint::Completions, tokens.as_bytes(), &[]).choices, 1);
    }

    #[test]
    fn images_count_by_rule_not_by_payload_and_tools_by_bytes() {
        let png = png_b64(1024, 1024);
        let url = format!("data:image/png;base64,{png}{}", "A".repeat(4000));
        let tools = json!([{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]);
        let body = json!({"model":"m","tools":tools,"messages":[{"role":"user","content":[
            {"type":"text","text":"what is it"},
            {"type":"image_url","image_url":{"url":url,"detail":"high"}},
            {"type":"image_url","image_url":{"url":"https://example.com/a.jpg","detail":"low"}},
            {"type":"image_url","image_url":{"url":"https://example.com/b.jpg"}}
        ]}]});
        let text = body.to_string().len() as u64 - url.len() as u64 - 2 * "https://example.com/a.jpg".len() as u64;
        let w = chat(body, ImageRule::for_model("gpt-4o"));
        assert_eq!(w.prompt, text + OVERHEAD + 765 + 85 + (85 + 8 * 170));
    }

    #[test]
    fn responses_anthropic_and_audio_shapes_are_found() {
        let input = json!({"model":"m","input":[{"role":"user","content":[
            {"type":"input_image","image_url":"https://x/y.png","detail":"low"}]}]});
        let len = input.to_string().len() as u64 - "https://x/y.png".len() as u64;
        let w = worst_case(Endpoint::Responses, input.to_string().as_bytes(), &[ImageRule::for_model("gpt-4o")]);
        assert_eq!(w.prompt, len + OVERHEAD + 85);
        let data = png_b64(500, 300);
        let native = json!({"model":"m","max_tokens":9,"messages":[{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":data}}]}]});
        let len = native.to_string().len() as u64 - data.len() as u64;
        assert_eq!(chat(native, ImageRule::Anthropic).prompt, len + OVERHEAD + 200);
        let audio = "B".repeat(8000);
        let body = json!({"model":"m","messages":[{"role":"user","content":[
            {"type":"input_audio","input_audio":{"data":audio,"format":"wav"}}]}]});
        let len = body.to_string().len() as u64 - 8000;
        assert_eq!(chat(body, ImageRule::Unknown).prompt, len + OVERHEAD + 1000);
    }

    #[test]
    fn a_messages_request_is_bounded_natively_and_translated() {
        let data = png_b64(1000, 1000);
        let native = json!({"model":"claude-x","max_tokens":50,"messages":[{"role":"user","content":[
            {"type":"text","text":"What is in this picture?"},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":data}}]}]});
        let body = bytes::Bytes::from(native.to_string());
        let text = body.len() as u64 - data.len() as u64;
        for anthropic_only in [true, false] {
            let (pipeline, _) = crate::messages::native::pipeline_body(&body, |_| anthropic_only).unwrap();
            let w = worst_case(Endpoint::ChatCompletions, &pipeline, &[ImageRule::for_model("claude-x")]);
            // The image by Anthropic's rule (1000² / 750), not by its payload; the text by its bytes.
            assert!(w.prompt >= 1334 + OVERHEAD + "What is in this picture?".len() as u64, "{anthropic_only}: {w:?}");
            assert!(w.prompt < text + 1334 + OVERHEAD + 200, "{anthropic_only}: the payload is not text: {w:?}");
            assert_eq!(w.choices, 1);
        }
    }

    #[test]
    fn png_headers_are_read_and_anything_else_is_unknown() {
        assert_eq!(png_size(&png_b64(640, 480)), Some((640, 480)));
        assert_eq!(png_size("/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDA"), None);
        assert_eq!(png_size("short"), None);
    }

    #[test]
    #[ignore = "prints the per-request cost; run with --ignored --nocapture"]
    fn cost_of_a_short_chat_body() {
        let body = json!({"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},
            {"role":"user","content":"Write a haiku about the sea, then explain its imagery in two sentences."}],
            "max_tokens":200})
        .to_string();
        let rules = [ImageRule::for_model("gpt-4o")];
        let t = std::time::Instant::now();
        let mut sum = 0;
        for _ in 0..100_000 {
            sum += worst_case(Endpoint::ChatCompletions, body.as_bytes(), &rules).prompt;
        }
        println!("worst_case on a {} byte chat body: {:?} per call ({sum})", body.len(), t.elapsed() / 100_000);
    }

    use serde_json::json;
}
