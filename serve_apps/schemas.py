"""Request bodies of the HTTP API (pydantic), validated strictly: wrong types are 422s."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _integral(cls, value: Any, info: ValidationInfo) -> Any:
        """``7.0`` in an integer field is 7: JSON has one number type and JSON Schema's
        ``integer`` takes it. ``7.5``, ``"7"`` and ``true`` stay type errors."""
        if isinstance(value, float) and value.is_integer():
            kind = cls.model_fields[info.field_name].annotation
            if kind is int or int in get_args(kind):
                return int(value)
        return value


class GenerateRequest(_Strict):
    """``POST /generate``: text medical QA (the prior art's contract)."""

    question: str = Field(
        description="The medical question.", examples=["What are the symptoms of diabetes?"]
    )
    temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy)."
    )
    max_length: int = Field(100, ge=1, description="Maximum new tokens.")
    use_safety: bool = Field(True, description="Run the guard on the question and the answer.")
    model: str | None = Field(
        None,
        description="The text medical-QA model's name (GET /v1/models); default: the "
        "configured one.",
    )


class AnalyzeRequest(_Strict):
    """``POST /v1/analyze``: one image plus an optional question; answered as SSE."""

    image: str = Field(description="The image: base64, or a data URL (data:image/png;base64,...).")
    question: str = Field("", description="Question about the image (default: describe it).")
    model: str | None = Field(None, description="Base model name or a LoRA adapter name.")
    k: int = Field(3, ge=1, description="Similar cases and knowledge passages to return.")
    max_new_tokens: int | None = Field(None, ge=1, description="Reasoning length.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    agent: bool = Field(
        True,
        description="Run the agentic RAG step (agent_* events before safety/done); false "
        "turns it off for this request.",
    )


class SearchRequest(_Strict):
    """``POST /v1/search``: exactly one of ``text`` (text->image) or ``image`` (image->text)."""

    text: str | None = Field(None, description="Find cases whose image matches this description.")
    image: str | None = Field(
        None, description="Find cases whose report matches this image (base64 / data URL)."
    )
    k: int = Field(5, ge=1)
    filters: dict[str, Any] | None = Field(
        None, description='Case filters, e.g. {"modality": "X-Ray", "labels": ["effusion"]}.'
    )


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` (OpenAI-compatible; unknown fields are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="Only n=1 is supported.")
