"""Files in and out: video with its sound (PyAV), and the prompt / CLIP embeddings of a job (safetensors)."""
