"""The HTTP edge: the FastAPI app, routes (the Open Inference Protocol under routes/v2), uploads, limits, errors."""
