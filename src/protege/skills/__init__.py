"""Skills: SKILL.md files per the Agent Skills spec — written by the teacher, reviewed, versioned and exported."""

from protege.skills.author import SkillAuthor, TaskContract
from protege.skills.library import SkillLibrary
from protege.skills.skill import Skill, skill_name

__all__ = ["Skill", "SkillAuthor", "SkillLibrary", "TaskContract", "skill_name"]
