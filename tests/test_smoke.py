import json


def test_trained_model_dir_has_artifacts(trained_model_dir):
    names = {p.name for p in trained_model_dir.iterdir()}
    assert {"animal_sound_model.keras", "config.json", "metrics.json", "label_encoder.pkl",
            "classification_report.csv", "confusion_matrix.csv", "confusion_matrix.png", "history.csv",
            "training_curves.png"} <= names
    metrics = json.loads((trained_model_dir / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "weighted_f1", "n_test", "train_seconds"} <= set(metrics)
    assert not any(p.name.startswith(".") for p in trained_model_dir.parent.iterdir() if p.is_dir())
