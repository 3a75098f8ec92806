"""Write a deploy model (detections only, with NMS) from a training checkpoint.

    python deploy.py --prefix output/ssd --output output/deploy/ssd            # needs ssdkit to run
    python deploy.py --prefix output/ssd --output output/deploy/ssd_portable --portable   # plain MXNet
    python deploy.py --prefix output/fpn --output output/deploy/fpn          # FPN (no --portable: no contrib ops)

See :func:`ssdkit.api.deploy.deploy_model` for the files and how to load them.
"""
import argparse

from ssdkit.api.deploy import deploy_model


def _epoch(text):
    return text if text == "best" else int(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", required=True, help="training prefix (train.py --prefix)")
    parser.add_argument("--output", required=True, help="deploy prefix to write")
    parser.add_argument("--epoch", type=_epoch, default=None, help="epoch or 'best' (default: best, else last)")
    parser.add_argument("--portable", action="store_true",
                        help="use MXNet's built-in contrib operators (runs without ssdkit; SSD networks only)")
    parser.add_argument("--max-detections", type=int, default=100,
                        help="detection rows per image (ssdkit graph only; -1: SSD one per anchor, FPN as trained)")
    args = parser.parse_args(argv)
    try:
        written = deploy_model(args.prefix, args.output, epoch=args.epoch, portable=args.portable,
                               max_detections=args.max_detections)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print("wrote %s and %s (%d parameters)" % (written["symbol"], written["params"], written["num_params"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
