"""The /predict request and response. Bad input is a 422 that says what is wrong, never a 500."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, model_validator

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Row = Annotated[list[Number], Field(min_length=1)]


class PredictRequestBase(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"features": [5.1, 3.5, 1.4, 0.2]}, {"instances": [[5.1, 3.5, 1.4, 0.2]]}]},
    )

    features: Row | None = Field(None, description="one row of numeric features")
    instances: Annotated[list[Row], Field(min_length=1)] | None = Field(None, description="a batch of rows")
    return_probabilities: bool = Field(False, description="also return each row's class probabilities")

    @model_validator(mode="after")
    def exactly_one(self) -> PredictRequestBase:
        if (self.features is None) == (self.instances is None):
            raise ValueError("give exactly one of 'features' (one row) or 'instances' (a batch of rows)")
        return self

    def rows(self) -> list[list[float]]:
        if self.features is not None:
            return [self.features]
        assert self.instances is not None  # exactly_one
        return self.instances


def request_model(max_batch_size: int) -> type[PredictRequestBase]:
    """The request schema with MAX_BATCH_SIZE as the batch's max length: validation stops at the first extra row."""

    class PredictRequest(PredictRequestBase):
        instances: Annotated[list[Row], Field(min_length=1, max_length=max_batch_size)] | None = Field(
            None, description=f"a batch of at most {max_batch_size} rows (MAX_BATCH_SIZE)"
        )

    return PredictRequest


class TextRequestBase(BaseModel):
    """Text models (framework=transformers): {"text": "..."} or {"inputs": ["...", ...]}."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "a wonderful film"}, {"inputs": ["a wonderful film", "dull"]}]},
    )

    text: str | None = Field(None, description="one text")
    inputs: list[str] | None = Field(None, min_length=1, description="a batch of texts")
    return_probabilities: bool = Field(False, description="also return each text's class probabilities")

    @model_validator(mode="after")
    def exactly_one(self) -> TextRequestBase:
        if (self.text is None) == (self.inputs is None):
            raise ValueError("give exactly one of 'text' (one text) or 'inputs' (a list of texts)")
        return self

    def rows(self) -> list[str]:
        if self.text is not None:
            return [self.text]
        assert self.inputs is not None  # exactly_one
        return self.inputs


def text_request_model(max_batch_size: int, max_text_chars: int) -> type[TextRequestBase]:
    """The text schema with MAX_BATCH_SIZE texts of at most MAX_TEXT_CHARS characters, none empty."""
    Text = Annotated[str, Field(strict=True, min_length=1, max_length=max_text_chars, pattern=r"\S")]  # noqa: N806

    class TextRequest(TextRequestBase):
        text: Text | None = Field(None, description=f"one text of at most {max_text_chars} characters")
        inputs: Annotated[list[Text], Field(min_length=1, max_length=max_batch_size)] | None = Field(
            None, description=f"a batch of at most {max_batch_size} texts (MAX_BATCH_SIZE)"
        )

    return TextRequest


class PredictResponse(BaseModel):
    predictions: list[Any]
    labels: list[str] | None = None
    probabilities: list[list[float]] | None = Field(
        None, description="per row, one probability per class, in the order of metadata.json `classes`"
    )
    model_sha256: str


def json_safe(value: Any) -> Any:
    """NaN and infinity are not JSON: echo them back as strings instead of failing with a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def invalid(location: tuple[Any, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", *location), "msg": message}])
