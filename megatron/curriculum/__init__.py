"""Curriculum learning (DeepSpeed Data Efficiency's "data sampling"), composed with random-LTD's
"data routing": pacing schedules, difficulty metrics, the curriculum sampler and the sequence-length
batch transforms. Nothing here imports the trainer; per-step values are passed in explicitly."""

from .config import METRICS, SCHEDULES, SEQLEN_METRICS, CurriculumConfig, add_curriculum_args, curriculum_config_from_args
from .resume import CurriculumChanged, check_curriculum, curriculum_record
from .sampler import CurriculumSampler, CurriculumStarved, easiest_first
from .schedule import difficulty, pool_size, rows_per_sample, seq_length_at

__all__ = [
    "METRICS", "SCHEDULES", "SEQLEN_METRICS", "CurriculumConfig", "add_curriculum_args", "curriculum_config_from_args",
    "CurriculumChanged", "check_curriculum", "curriculum_record", "CurriculumSampler", "CurriculumStarved",
    "easiest_first", "difficulty", "pool_size", "rows_per_sample", "seq_length_at",
]
