"""Real-model builders (float ``ov.Model``) and NNCF low-precision variants for oracle tests."""
