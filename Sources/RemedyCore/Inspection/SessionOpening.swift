import Foundation
import Guestfs
import Logging

/// Opening sessions: the image checked and locked (``PreparedImage``), an overlay for a writable session, one
/// appliance for one image or for many (batch), then each session built in it. A failure before a session exists
/// undoes what was done for that image (overlay discarded, lock released); nothing reaches the image.
extension ImageSession {
    /// Opens, inspects and reads the hives of a Windows image, in an appliance of its own.
    /// A writable session writes into an overlay (see ``Overlay``): into the image after a proven commit, or with
    /// `output` into a new image, the source only read.
    public static func open(
        image path: String, writable: Bool, options: ApplianceOptions, inputs: PayloadInputs = PayloadInputs(),
        output: OutputTarget? = nil
    ) throws -> ImageSession {
        let prepared = try PreparedImage.prepare(
            path, writable: writable && output == nil, notice: { options.logger.notice("\($0)") })
        let appliance: Appliance
        var overlay: Overlay?
        do {
            if writable { overlay = try makeOverlay(prepared, output: output) }
            appliance = try Appliance.launch(drives: [drive(prepared, overlay)] + isoDrives(inputs), options: options)
        } catch {
            overlay?.discard()
            prepared.unlock()
            throw RemedyError.wrap(error, image: path)
        }
        do {
            try afterLaunch(appliance, image: path)
            let devices = try appliance.guestfs.listDevices()
            return try ImageSession(
                prepared, writable: writable, appliance: appliance, device: devices[0], owns: true,
                payloads: SessionPayloads(inputs: inputs, isoDevice: inputs.virtioWinIsImage ? devices.last : nil),
                overlay: overlay)
        } catch {
            appliance.close()
            overlay?.discard()
            prepared.unlock()
            throw RemedyError.wrap(error, image: path)
        }
    }

    /// A fresh overlay on the image (``PreparedImage/prepare(_:writable:notice:)`` already refused an image qemu
    /// cannot update in place).
    fileprivate static func makeOverlay(_ prepared: PreparedImage, output: OutputTarget?) throws -> Overlay {
        return try Overlay.create(
            base: prepared.path, backing: output == nil ? nil : (prepared.source?.qemuSpec ?? prepared.drivePath),
            format: prepared.format, output: output)
    }

    /// The image as the appliance sees it: its overlay, writable, or the image itself, read-only.
    fileprivate static func drive(_ prepared: PreparedImage, _ overlay: Overlay?) -> Drive {
        if let overlay { return Drive(path: overlay.path, format: "qcow2", readonly: false) }
        return prepared.drive(readonly: true)
    }

    fileprivate static func afterLaunch(_ appliance: Appliance, image: String) throws {
        if Fault.enabled, let pid = try? appliance.guestfs.pid() { Fault.register(appliance: pid) }
        try Fault.point("launch", image: image)
    }

    /// The virtio-win ISO, attached read-only after the images (one copy for every image of the appliance).
    fileprivate static func isoDrives(_ inputs: PayloadInputs) -> [Drive] {
        guard inputs.virtioWinIsImage, let iso = inputs.virtioWin else { return [] }
        return [Drive(path: iso, format: "raw", readonly: true)]
    }

    /// Opens several images in one appliance (batch mode). An image that
    /// cannot be attached or inspected is a failure of its own; a launch
    /// failure fails them all (the caller retries them one by one to find
    /// the culprit). The caller shuts the appliance down after its writes,
    /// then closes the sessions.
    public static func openMany(
        _ paths: [String], writable: Bool, options: ApplianceOptions,
        inputs: PayloadInputs = PayloadInputs(),
        output: ((String) -> OutputTarget?)? = nil
    ) -> (appliance: Appliance?, sessions: [Result<ImageSession, RemedyError>]) {
        var results = [Result<ImageSession, RemedyError>?](repeating: nil, count: paths.count)
        var prepared: [(index: Int, image: PreparedImage, overlay: Overlay?)] = []
        for (i, p) in paths.enumerated() {
            let out = writable ? output?(p) : nil
            do {
                let img = try PreparedImage.prepare(
                    p, writable: writable && out == nil, notice: { options.logger.notice("\($0)") })
                do {
                    prepared.append((i, img, writable ? try makeOverlay(img, output: out) : nil))
                } catch {
                    img.unlock()
                    throw error
                }
            } catch { results[i] = .failure(RemedyError.wrap(error, image: p)) }
        }
        guard !prepared.isEmpty else { return (nil, results.map { $0! }) }
        let appliance: Appliance
        let devices: [String]
        do {
            appliance = try Appliance.launch(
                drives: prepared.map { drive($0.image, $0.overlay) } + isoDrives(inputs), options: options)
            devices = try appliance.guestfs.listDevices()
            try afterLaunch(appliance, image: prepared[0].image.path)
        } catch {
            for (i, img, overlay) in prepared {
                overlay?.discard()
                img.unlock()
                results[i] = .failure(RemedyError.wrap(error, image: img.path))
            }
            return (nil, results.map { $0! })
        }
        for (n, (i, img, overlay)) in prepared.enumerated() {
            do {
                let session = try ImageSession(
                    img, writable: writable, appliance: appliance, device: devices[n], owns: false,
                    payloads: SessionPayloads(inputs: inputs, isoDevice: inputs.virtioWinIsImage ? devices.last : nil),
                    overlay: overlay)
                results[i] = .success(session)
            } catch {
                overlay?.discard()
                img.unlock()
                results[i] = .failure(RemedyError.wrap(error, image: img.path))
            }
        }
        return (appliance, results.map { $0! })
    }
}
