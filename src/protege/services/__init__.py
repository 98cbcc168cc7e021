"""The app's running services, composed by the facade (protege.app) and handed what they use (narrow Protocols:
they never import the facade): where each tier's model comes from (tiers, serving), the event loop calls run on
(portal), and what happens around calls, off the caller's path (lifecycle: skill upkeep, shadow checks, drift,
re-distillation; background: its durable jobs). No re-exports: import the defining module."""
