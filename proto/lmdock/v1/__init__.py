"""Generated wire contract of lmdock (see market.proto); regenerate with proto/generate.sh."""
