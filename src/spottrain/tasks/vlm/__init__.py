"""The vlm_lora task (seed 002): LoRA on an image-text-to-text model, evaluated by generation."""
