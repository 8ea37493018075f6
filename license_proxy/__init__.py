"""The license proxy: one small HTTP service every deployment's API asks whether it is licensed."""
