"""Speech-to-text worker: consumes `jobs:stt`, answers with transcripts."""
