"""Fine-tuning stages (sft, dpo) as tasks on train/'s DeepSpeed loop."""
