"""The bundled diffusion backend: A1111 prompt syntax, loading, samplers, generation."""
