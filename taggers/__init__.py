"""Models that turn pixels into tags, captions, scores, detections or embeddings."""
