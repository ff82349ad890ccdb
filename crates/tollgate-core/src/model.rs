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
