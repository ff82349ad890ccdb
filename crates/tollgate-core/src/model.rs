//! Public model types and the `/v1` endpoints, with which model type each endpoint serves.

/// What a model does; decides which endpoints may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Chat,
    Embedding,
    Image,
}

impl ModelType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embedding => "embedding",
            Self::Image => "image",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "chat" => Some(Self::Chat),
            "embedding" => Some(Self::Embedding),
            "image" => Some(Self::Image),
            _ => None,
        }
    }
}

/// A public model id: 1-256 characters without whitespace or control characters.
pub fn valid_model_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A provider or channel-group name: 1-64 letters, digits, `-`, `_` or `.`.
pub fn valid_route_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A billable `/v1` endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    ImagesGenerations,
    Responses,
    /// Anthropic's Messages API, served by translating to and from a chat completion.
    Messages,
    Models,
}

impl Endpoint {
    /// The path under `/v1`, as stored in usage rows and matched by endpoint scopes.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::ImagesGenerations => "/v1/images/generations",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
            Self::Models => "/v1/models",
        }
    }

    /// The model type this endpoint calls, if it calls one.
    pub fn model_type(self) -> Option<ModelType> {
        match self {
            Self::ChatCompletions | Self::Completions | Self::Responses | Self::Messages => Some(ModelType::Chat),
            Self::Embeddings => Some(ModelType::Embedding),
            Self::ImagesGenerations => Some(ModelType::Image),
            Self::Models => None,
        }
    }
}
