"""Weight sync from learner to rollout engines: one design. The learner packs its weights into one flat
buffer (flat.py) that reaches each engine through the Ray object store or rank 0's shared-memory file, and
the engine's worker extension loads it (rollout/worker_ext.py). `object_store.ObjectStoreSync` also ships
safetensors buckets by bytes or by /dev/shm path (`transport`), for engines outside a Ray actor."""
