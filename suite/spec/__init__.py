"""Specs: pydantic schema, YAML loading with line-numbered errors, and expansion into cases."""

from suite.spec.expand import Case, expand_cases
from suite.spec.loader import load_spec, load_spec_text
from suite.spec.schema import spec_json_schema, spec_model

__all__ = ["Case", "expand_cases", "load_spec", "load_spec_text", "spec_json_schema", "spec_model"]
