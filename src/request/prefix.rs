//! The prompt's prefix key for a self-hosted pool's choice of replica ([`crate::pool`]),
//! taken during the one reading of a body.

/// Hashes the leading bytes of a conversation's opening, as the reading hands its text over,
/// up to each of the policy's `prefix_bytes` bounds (ascending): one streaming hash, a
/// snapshot at each.
///
/// The opening is the text before the model's first turn: the system prompt, tool definitions
/// and the first user message. Every later turn of the conversation starts with the same
/// opening, so its key does not change as the conversation grows, even when the opening is
/// shorter than the bound; the engine's KV cache holds at least that much of it.
pub struct PrefixHasher {
    bounds: Vec<u32>,
    seen: u64,
    hasher: xxhash_rust::xxh3::Xxh3,
    keys: Vec<(u32, u64)>,
    /// The model's first turn has been read: nothing after it counts.
    closed: bool,
}

impl PrefixHasher {
    pub fn new(bounds: Vec<u32>) -> PrefixHasher {
        PrefixHasher {
            bounds,
            seen: 0,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            keys: Vec::new(),
            closed: false,
        }
    }

    /// Feeds one text the reading found, of `kind`: the opening ends at the first text of the
    /// model's own (an earlier reply, a tool call or result, reasoning).
    pub fn text(&mut self, kind: super::Text, text: &str) {
        use super::Text;
        match kind {
            _ if self.closed => {}
            Text::Prompt | Text::ToolDefinition => self.feed(text),
            Text::Reply | Text::ToolCall | Text::ToolOutput | Text::Reasoning => {
                self.closed = true;
            }
        }
    }

    /// Feeds one text; texts are separated, so `"ab" + "c"` and `"a" + "bc"` differ.
    pub fn feed(&mut self, text: &str) {
        let mut bytes = text.as_bytes();
        while let Some(&bound) = self.bounds.get(self.keys.len()) {
            let room = u64::from(bound).saturating_sub(self.seen);
            let take = room.min(bytes.len() as u64) as usize;
            self.hasher.update(&bytes[..take]);
            self.seen += take as u64;
            bytes = &bytes[take..];
            if self.seen >= u64::from(bound) {
                self.keys.push((bound, self.hasher.digest()));
                continue;
            }
            self.hasher.update(&[0x1e]);
            return;
        }
    }

    /// The key per bound: a prompt shorter than a bound is hashed whole.
    pub fn finish(mut self) -> Vec<(u32, u64)> {
        let whole = self.hasher.digest();
        while let Some(&bound) = self.bounds.get(self.keys.len()) {
            self.keys.push((bound, whole));
        }
        self.keys
    }
}
