"""ssdkit.api: what the scripts call — train, evaluate, deploy — built from a Config."""
