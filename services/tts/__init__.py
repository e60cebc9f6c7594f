"""Text-to-speech worker: consumes `jobs:tts`, streams audio to the client."""
