"""The bundled demo synthesizer: its weights, tokenizer and the script that trained them."""
