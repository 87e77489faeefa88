"""Transformer + SimCLR + ProtoNet: self-supervised pretraining, episodic fine-tuning, nearest-prototype inference.

    python enhance_transformer.py [--pretrain-epochs 20 --epochs 20 --episodes 10 --n-way 10 --k-shot 4]

1. Encoder: the log-Mel frames are cut into patches of ``--patch`` frames
   (10 -> 50 tokens of 10x128 values, 0.32 s each), each projected by a
   Dense layer to ``--d-model`` dims, plus a learned position embedding; ``--depth`` pre-norm
   Transformer blocks (multi-head self-attention + GELU MLP, residuals); a
   final LayerNorm and a mean over the tokens that hold sound (clips are
   zero-padded to 16 s, a median clip fills 2.5 s) give the clip embedding.
2. SimCLR (no labels): two augmented views of every training clip, a
   projection head, NT-Xent loss at ``--temperature``. A view is a random crop
   (60-100 % of the clip), then augment.WaveAugment (time shift, calibrated
   wind at 5-25 dB on the active part with p=0.5, a random spectral tilt:
   the gain that matters after per-clip normalisation), then features, then
   SpecAugment. Waveform views cost a feature pass each, so ``--views`` of them
   per clip are computed once (plus the clean clip); every step pairs two
   different ones and draws fresh SpecAugment masks.
3. ProtoNet fine-tuning (projection head dropped): each episode draws
   ``--n-way`` classes, ``--k-shot`` support and ``--n-query`` query clips per
   class (augmented views); loss = cross-entropy of softmax(-squared distance)
   of queries to the support means. Episodes balance the classes, which is
   what the rare ones need. After each epoch the prototypes of the clean
   training clips classify the validation split; early stopping on its loss.
4. The saved model is encoder -> PrototypeHead (core/layers.py), whose
   non-trainable weights hold the class means of all training clips, giving
   softmax(-squared distance) class probabilities like any other variant.

Full run on 2 shared CPU cores: ~2 min (views 10 s, SimCLR ~2.5 s per epoch,
ProtoNet ~3.5 s per epoch); 186 k parameters. Deterministic for a given seed.
"""
import time

import numpy as np
import pandas as pd

import common


def make_parser():
    # ProtoNet episodes sample classes, so a uniform target would never be trained: negatives get a prototype
    p = common.make_parser("enhance_transformer", __doc__.splitlines()[0], epochs=20, batch_size=64, lr=3e-4,
                           patience=5, outliers="background")
    g = p.add_argument_group("transformer / SimCLR / ProtoNet")
    g.add_argument("--patch", type=int, default=10, help="frames per token")
    g.add_argument("--d-model", type=int, default=64)
    g.add_argument("--depth", type=int, default=3, help="Transformer blocks")
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--mlp-dim", type=int, default=128)
    g.add_argument("--proj-dim", type=int, default=64, help="SimCLR projection head output")
    g.add_argument("--pretrain-epochs", type=int, default=20, help="SimCLR epochs (0 skips pretraining)")
    g.add_argument("--pretrain-lr", type=float, default=1e-3)
    g.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    g.add_argument("--views", type=int, default=4, help="precomputed waveform-augmented views per clip")
    g.add_argument("--episodes", type=int, default=10, help="ProtoNet episodes per fine-tuning epoch")
    g.add_argument("--n-way", type=int, default=10, help="classes per episode (capped at the class count)")
    g.add_argument("--k-shot", type=int, default=4, help="support clips per class and episode")
    g.add_argument("--n-query", type=int, default=4, help="query clips per class and episode")
    return p


def build_encoder(input_shape, d_model=64, depth=3, heads=4, mlp_dim=128, patch=10):
    """(batch, frames, mels) log-Mel -> (batch, d_model) embedding; plain ops only (exportable)."""
    import keras
    from keras import layers

    from core.layers import MaskedMeanPooling, PositionEmbedding
    frames, mels = input_shape
    n_tokens = frames // patch
    inputs = keras.Input(shape=input_shape, name="log_mel")
    x = layers.Cropping1D((0, frames - n_tokens * patch))(inputs) if frames % patch else inputs
    patches = layers.Reshape((n_tokens, patch * mels), name="patches")(x)
    x = layers.Dense(d_model, name="patch_embedding")(patches)
    x = PositionEmbedding(n_tokens, name="position_embedding")(x)
    for i in range(depth):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = layers.MultiHeadAttention(heads, d_model // heads, name=f"block{i}_attention")(h, h)
        x = layers.Add(name=f"block{i}_residual1")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = layers.Dense(mlp_dim, activation="gelu", name=f"block{i}_mlp1")(h)
        h = layers.Dense(d_model, name=f"block{i}_mlp2")(h)
        x = layers.Add(name=f"block{i}_residual2")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    embedding = MaskedMeanPooling(name="embedding")([x, patches])
    return keras.Model(inputs, embedding, name="transformer_encoder")


def build_model(input_shape, n_classes, prototypes=None, encoder=None, **encoder_kwargs):
    """The saved inference model: encoder -> PrototypeHead, one flat functional graph."""
    import keras

    from core.layers import PrototypeHead
    encoder = encoder or build_encoder(input_shape, **encoder_kwargs)
    head = PrototypeHead(n_classes, name="probabilities")
    model = keras.Model(encoder.inputs, head(encoder.outputs[0]), name="transformer_protonet")
    if prototypes is not None:
        head.set_prototypes(np.asarray(prototypes, np.float32))
    return model


# ---------------------------------------------------------------- augmented views

def trim(x: np.ndarray) -> np.ndarray:
    """Drop the zero padding after the last frame of sound (views are stored unpadded)."""
    return x[:common.n_real_frames(x)].astype(np.float16)


def crop(y: np.ndarray, rng: np.random.Generator, min_fraction: float = 0.6) -> np.ndarray:
    """A random excerpt of 60-100 % of the clip."""
    return common.random_crop(y, int(len(y) * rng.uniform(min_fraction, 1.0)), rng)


def view_bank(data, args, rng) -> list:
    """views[v][i]: unpadded features of clip i; view 0 is the clean clip, 1.. are augmented waveforms."""
    cfg = common.FeatureConfig()
    aug = common.WaveAugment(common.noise_bank(args, cfg), cfg, tilt=0.5)
    bank = [[trim(x) for x in data.train.x]]
    for _ in range(args.views):
        bank.append([trim(common.clip_features(aug.wave(crop(y, rng), rng), cfg)) for y in data.train.audio])
    return bank


def assemble(bank, clips, views, n_frames, rng) -> np.ndarray:
    """A padded batch (B, frames, mels) of the given (clip, view) pairs, with fresh SpecAugment."""
    x = np.zeros((len(clips), n_frames, bank[0][0].shape[1]), np.float32)
    for r, (i, v) in enumerate(zip(clips, views)):
        a = bank[v][i]
        x[r, :len(a)] = a
    return common.spec_augment(x, rng)


def two_views(n_views: int, size: int, rng):
    """Two different view indices per clip."""
    a = rng.integers(0, n_views, size)
    b = (a + rng.integers(1, n_views, size)) % n_views if n_views > 1 else a
    return a, b


def episode(y, n_classes, args, rng):
    """(clip indices, episode labels) of an N-way K-shot episode: supports first, then queries."""
    classes = rng.choice(n_classes, size=min(args.n_way, n_classes), replace=False)
    per = args.k_shot + args.n_query
    support, query = [], []
    for c in classes:
        members = np.flatnonzero(y == c)
        pick = rng.choice(members, size=per, replace=len(members) < per)
        support.append(pick[:args.k_shot])
        query.append(pick[args.k_shot:])
    n_way = len(classes)
    return (np.concatenate(support + query), np.repeat(np.arange(n_way), args.k_shot),
            np.repeat(np.arange(n_way), args.n_query), n_way)


# ---------------------------------------------------------------- training

def embed(encoder, x, batch=128) -> np.ndarray:
    return np.concatenate([np.asarray(encoder(x[i:i + batch], training=False)) for i in range(0, len(x), batch)])


def train(data, args, staging):
    import keras
    import tensorflow as tf

    from core.layers import squared_distances
    from core.losses import class_prototypes, nt_xent_loss, prototypical_loss
    rng = np.random.default_rng(args.seed)
    n_classes, n_frames = len(data.classes), data.train.x.shape[1]
    encoder = build_encoder(data.train.x.shape[1:], args.d_model, args.depth, args.heads, args.mlp_dim, args.patch)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    start = time.time()
    bank = view_bank(data, args, rng)
    log(f"views: {len(bank)} per clip for {len(data.train.y)} clips in {time.time() - start:.0f} s")

    # ---- SimCLR pretraining
    projector = keras.Sequential([keras.layers.Dense(args.d_model, activation="relu"),
                                  keras.layers.Dense(args.proj_dim)], name="projection_head")
    projector.build((None, args.d_model))
    pre_vars = encoder.trainable_variables + projector.trainable_variables
    pre_opt = keras.optimizers.Adam(args.pretrain_lr, clipnorm=1.0)
    pre_opt.build(pre_vars)

    @tf.function(reduce_retracing=True)
    def pretrain_step(x1, x2):
        with tf.GradientTape() as tape:
            z1 = projector(encoder(x1, training=True), training=True)
            z2 = projector(encoder(x2, training=True), training=True)
            loss = nt_xent_loss(z1, z2, args.temperature)
        pre_opt.apply_gradients(zip(tape.gradient(loss, pre_vars), pre_vars))
        return loss

    n = common.draws_per_epoch(data.train)   # shifted negatives take turns among the negatives
    batch = min(args.batch_size, n)
    pre_history = []
    for epoch in range(args.pretrain_epochs):
        t0, order, losses = time.time(), common.epoch_draw(data.train, rng), []
        for s in range(0, n - batch + 1, batch):          # full batches only: NT-Xent needs negatives
            idx = order[s:s + batch]
            va, vb = two_views(len(bank), len(idx), rng)
            losses.append(float(pretrain_step(assemble(bank, idx, va, n_frames, rng),
                                              assemble(bank, idx, vb, n_frames, rng))))
        pre_history.append({"epoch": epoch + 1, "nt_xent": np.mean(losses), "seconds": time.time() - t0})
        log(f"simclr {epoch + 1}/{args.pretrain_epochs}: nt-xent {np.mean(losses):.4f} ({time.time() - t0:.1f} s)")
    pd.DataFrame(pre_history).to_csv(staging / "pretrain_history.csv", index=False)

    # ---- ProtoNet fine-tuning
    opt = keras.optimizers.Adam(args.lr, clipnorm=1.0)
    opt.build(encoder.trainable_variables)

    @tf.function(reduce_retracing=True)
    def episode_step(x, support_labels, query_labels, n_way, n_support):
        with tf.GradientTape() as tape:
            e = encoder(x, training=True)
            loss, acc = prototypical_loss(e[:n_support], support_labels, e[n_support:], query_labels, n_way)
        opt.apply_gradients(zip(tape.gradient(loss, encoder.trainable_variables), encoder.trainable_variables))
        return loss, acc

    def validate():
        protos = np.asarray(class_prototypes(embed(encoder, data.train.x), data.train.y, n_classes))
        logits = -np.asarray(squared_distances(embed(encoder, data.val.x), protos))
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(data.val.y)), data.val.y].mean()), \
            float((logits.argmax(1) == data.val.y).mean()), protos

    history, best, best_loss, waited = [], None, np.inf, 0
    for epoch in range(args.epochs):
        t0, losses, accs = time.time(), [], []
        for _ in range(args.episodes):
            clips, s_lab, q_lab, n_way = episode(data.train.y, n_classes, args, rng)
            x = assemble(bank, clips, rng.integers(0, len(bank), len(clips)), n_frames, rng)
            loss, acc = episode_step(x, s_lab, q_lab, n_way, len(s_lab))
            losses.append(float(loss))
            accs.append(float(acc))
        val_loss, val_acc, _ = validate()
        history.append({"loss": np.mean(losses), "accuracy": np.mean(accs), "val_loss": val_loss,
                        "val_accuracy": val_acc})
        log(f"protonet {epoch + 1}/{args.epochs}: loss {np.mean(losses):.4f} acc {np.mean(accs):.3f} "
            f"val_loss {val_loss:.4f} val_acc {val_acc:.3f} ({time.time() - t0:.1f} s)")
        if val_loss < best_loss:
            best, best_loss, waited = encoder.get_weights(), val_loss, 0
        else:
            waited += 1
            if waited >= args.patience:
                break
    if best is not None:
        encoder.set_weights(best)
    protos = np.asarray(class_prototypes(embed(encoder, data.train.x), data.train.y, n_classes))
    model = build_model(data.train.x.shape[1:], n_classes, protos, encoder=encoder)
    return model, pd.DataFrame(history)


if __name__ == "__main__":
    common.run_experiment("enhance_transformer", make_parser().parse_args(), train, with_audio=True)
