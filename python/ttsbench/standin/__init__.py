"""STAND-INS for what cannot run here: vllm-omni+Voxtral (``tts``) and the production Gemma (``llm``).

Everything they serve is labelled as a stand-in; results measured against them carry ``"standin": true``.
"""
