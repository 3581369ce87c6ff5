"""The students: the common module and the bricks (networks), their backbones, the fused form of the bricks, what a brick reads, and the cost budget that sizes them."""
