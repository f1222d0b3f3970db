"""Plumbing used by every layer: atomic file writes (`atomic`) and device resolution (`device`)."""
