"""LLM worker: consumes `jobs:llm`, streams reply tokens to the session."""
