"""One APIRouter per concern; serving/app.py includes them all."""
